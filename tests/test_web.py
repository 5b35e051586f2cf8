"""The web page in a real browser: Debian's headless Chromium driven by Playwright (never a
downloaded browser) against `vislang serve --model default` on loopback. Upload a world scene, ask,
read the streamed answer; ask for a box and see it drawn. The screenshot is kept in out/artifacts."""

import os
import shutil
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


def test_upload_ask_and_see_the_box(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 900, "height": 760})
        page.goto(server)
        page.set_input_files("#files", str(SCENE))
        page.wait_for_selector(".pic img")
        answer = ask(page, "What color is the triangle?")
        assert answer.strip() and page.text_content("#error") == ""
        answer = ask(page, "Find the triangle. Answer with a bounding box.")
        assert "[" in answer
        boxes = page.get_attribute(".pic canvas", "data-boxes")
        assert boxes is not None and int(boxes) >= 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "web-page.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    docs = ROOT / "docs" / "serve" / "web-page.png"
    if os.environ.get("VISLANG_UPDATE_DOCS"):
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, docs)
