"""The web page in a real browser: Debian's headless Chromium driven by Playwright (never a
downloaded browser) against `vislang serve --model default` on loopback. Upload a world scene, ask,
read the streamed answer; ask for a box and see it drawn. The screenshot is kept in out/artifacts."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from test_serve import start_server

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "src" / "vislang" / "assets" / "demo" / "scene.png"
ARTIFACTS = ROOT / "out" / "artifacts"

if not os.path.exists(CHROMIUM):  # a failure, not a skip: `make test` installs it (make system-deps)
    raise RuntimeError(f"{CHROMIUM} is missing: run `make system-deps` or apt-get install chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("web_work")
    proc, base = start_server("default", work, "--weights", "int8")
    yield base
    proc.terminate()
    proc.wait(10)


def ask(page, question: str) -> str:
    page.fill("#question", question)
    page.click("#send")
    page.wait_for_function("document.getElementById('answer').dataset.done === '1'", timeout=60_000)
    return page.text_content("#answer")


@contextmanager
def page_with_the_scene(server):
    """Debian's Chromium on the page, the world scene uploaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 900, "height": 760})
        page.goto(server)
        page.set_input_files("#files", str(SCENE))
        page.wait_for_selector(".pic img")
        yield page
        browser.close()


def test_upload_ask_and_see_the_box(server):
    with page_with_the_scene(server) as page:
        answer = ask(page, "What color is the triangle?")
        assert answer.strip() and page.text_content("#error") == ""
        answer = ask(page, "Find the triangle. Answer with a bounding box.")
        assert "[" in answer
        boxes = page.get_attribute(".pic canvas", "data-boxes")
        assert boxes is not None and int(boxes) >= 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "web-page.png"
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    docs = ROOT / "docs" / "serve" / "web-page.png"
    if os.environ.get("VISLANG_UPDATE_DOCS"):
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, docs)


def test_the_page_draws_each_box_convention(server):
    """Boxes as the page reads them: "[x1, y1, x2, y2]" and Qwen2-VL's "(x1,y1),(x2,y2)" on the
    0..1000 grid; Qwen2.5-VL's JSON "bbox_2d" in pixels of the image after smart_resize, which the
    page recomputes from the settings /v1/models gives (set here as a Qwen2.5-VL server sends them)."""
    with page_with_the_scene(server) as page:
        page.wait_for_function("document.querySelector('.pic canvas').width > 0")
        count = page.evaluate(
            "drawBoxes('the car<|box_start|>(100,200),(300,400)<|box_end|> and [1, 2, 3, 4]')"
        )
        assert count == 2
        qwen25 = "{boxes: 'resized_pixels', factor: 28, min_pixels: 3136, max_pixels: 200704}"
        drawn = page.evaluate(
            f"""() => {{
                convention = {qwen25};
                const img = document.querySelector('.pic img');
                const [h, w] = smartResize(img.naturalHeight, img.naturalWidth, convention);
                const n = drawBoxes(`[{{"bbox_2d": [0, 0, ${{w / 2}}, ${{h}}], "label": "left half"}}]`);
                return {{n, h, w}};
            }}"""
        )
        from PIL import Image

        from vislang.processing.qwen2vl import smart_resize

        width, height = Image.open(SCENE).size
        assert drawn["n"] == 1
        assert (drawn["h"], drawn["w"]) == smart_resize(height, width, 28, 3136, 200704)
