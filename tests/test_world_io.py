"""Writing and reading the world: formats, stream datasets, the `world` commands, the preview grid.

A stub family registered in FAMILIES stands in for the generated families, so these tests
depend only on the contract of world/__init__.py, plus the real fashion and digits families.
"""

import argparse
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vislang.data import formats
from vislang.data.cli import add_world_parser
from vislang.data.preview import BOX_COLOR, grid_size, preview_grid
from vislang.data.stream import MixtureDataset, WorldDataset
from vislang.data.world import FAMILIES, Sample, WorldConfig, generate_sample

SMALL = WorldConfig(width=64, height=64)


def make_stub(rng, cfg, split) -> Sample:
    """One or two noise images, a box answer half the time, numpy values in the ground truth."""
    n_images = int(rng.integers(1, 3))
    images = [
        Image.fromarray(rng.integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8))
        for _ in range(n_images)
    ]
    images[0].info["dpi"] = (72, 72)  # metadata the writers must drop
    ground = bool(rng.integers(2))
    box = [int(v) for v in sorted(rng.integers(0, 1001, 4))]
    return Sample(
        family="",
        question="Where is the red circle? ¿Dónde?" if ground else "How many objects are there?",
        answer=f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]" if ground else str(n_images),
        kind="perception",
        qtype="ground" if ground else "count_all",
        images=images,
        objects=[{"shape": "circle", "cx": np.float64(rng.random()), "box": np.array(box)}],
        probes=[{"question": "How many?", "answer": "1", "qtype": "count_all"}],
        meta={"n_images": n_images},
    )


def make_video_stub(rng, cfg, split) -> Sample:
    frames = [Image.new("RGB", (cfg.width, cfg.height), (k * 20, 100, 200)) for k in range(8)]
    return Sample("", "Which direction is the circle moving?", "left", "perception", "direction", frames)


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setitem(FAMILIES, "stub", f"{__name__}:make_stub")
    return "stub"


def samples(n: int = 7) -> list[Sample]:
    return [generate_sample("stub", "train", 0, i, SMALL) for i in range(n)] + [
        generate_sample("fashion", "test", 0, i, SMALL) for i in range(2)
    ]


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(image.convert("RGB")) for image in images]


def expected_record(sample: Sample, paths: list[str]) -> dict:
    return formats.json.loads(formats.to_json(sample.record(paths)))


def test_formats_round_trip(tmp_path, stub):
    batch = samples()
    written = formats.write_dataset(batch, tmp_path, formats.FORMATS, shard_size=4)
    assert [p.name for p in written["webdataset"]] == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    assert any(len(s.images) == 2 for s in batch) and any(len(s.images) == 1 for s in batch)

    jsonl = list(formats.read_jsonl(tmp_path))
    llava = list(formats.read_llava(tmp_path))
    shards = list(formats.read_webdataset(written["webdataset"]))
    assert len(jsonl) == len(llava) == len(shards) == len(batch)
    for sample, (record, images), (entry, llava_images), (wds_record, wds_images) in zip(
        batch, jsonl, llava, shards
    ):
        paths = [f"images/{sample.id}_{k}.png" for k in range(len(sample.images))]
        assert record == expected_record(sample, paths)
        key = formats.shard_key(sample)
        names = [f"{key}.png"] if len(paths) == 1 else [f"{key}.{k}.png" for k in range(len(paths))]
        assert wds_record == expected_record(sample, names)
        for got in (images, llava_images, wds_images):
            assert all(np.array_equal(a, b) for a, b in zip(pixels(got), pixels(sample.images)))
            assert len(got) == len(sample.images)
        human, gpt = entry["conversations"]
        assert (human["from"], gpt["from"], gpt["value"]) == ("human", "gpt", sample.answer)
        assert human["value"].count("<image>") == len(sample.images)
        assert human["value"] == "<image>\n" * len(sample.images) + sample.question
        assert ("image" in entry) == (len(sample.images) == 1)


def test_webdataset_members_and_keys(tmp_path, stub):
    batch = samples(3)
    shards = formats.write_webdataset(batch, tmp_path, shard_size=2)
    names = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    for sample in batch:
        key = formats.shard_key(sample)
        assert "." not in key
        images = (
            [f"{key}.png"]
            if len(sample.images) == 1
            else [f"{key}.{k}.png" for k in range(len(sample.images))]
        )
        assert all(name in names for name in [*images, f"{key}.json"])
    with tarfile.open(shards[0]) as tar:
        member = tar.getmembers()[0]
        assert (member.mtime, member.uid, member.gid, member.uname, member.mode) == (0, 0, 0, "", 0o644)


def test_writing_twice_gives_identical_bytes(tmp_path, stub):
    for out in ("a", "b"):
        formats.write_dataset(samples(), tmp_path / out, formats.FORMATS, shard_size=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    shorter = formats.write_webdataset(samples(1), tmp_path / "a", shard_size=2)  # replaces all 3 shards
    assert sorted((tmp_path / "a").glob("shard-*.tar")) == shorter and len(shorter) == 2
    png = next((tmp_path / "a" / "images").glob("*.png")).read_bytes()
    assert b"tIME" not in png and b"pHYs" not in png and b"tEXt" not in png


def test_world_dataset_is_deterministic(stub):
    a, b = WorldDataset("stub", n=5, cfg=SMALL), WorldDataset("stub", n=5, cfg=SMALL)
    assert len(a) == 5
    for i in range(5):
        assert a[i].id == b[i].id == f"stub-train-0-{i}"
        assert pixels(a[i].images)[0].tobytes() == pixels(b[i].images)[0].tobytes()
    assert a[-1].id == a[4].id
    with pytest.raises(IndexError):
        a[5]
    with pytest.raises(ValueError, match="unknown family"):
        WorldDataset("nope", n=1)


def to_tensors(sample: Sample) -> tuple[torch.Tensor, str, str]:
    return torch.from_numpy(np.asarray(sample.images[0]).copy()), sample.answer, sample.id


def test_dataloader_workers_give_the_same_items():
    for dataset in (
        WorldDataset("digits", n=12, split="test", cfg=SMALL, transform=to_tensors),
        MixtureDataset({"fashion": 1, "digits": 1}, n=12, seed=3, cfg=SMALL, transform=to_tensors),
    ):
        direct = [dataset[i] for i in range(len(dataset))]
        batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
        images = torch.cat([b[0] for b in batches])
        assert torch.equal(images, torch.stack([d[0] for d in direct]))
        assert [a for b in batches for a in b[1]] == [d[1] for d in direct]
        assert [i for b in batches for i in b[2]] == [d[2] for d in direct]


def test_mixture_follows_its_weights(stub):
    mix = MixtureDataset({"stub": 3, "fashion": 1}, n=2000, seed=1, cfg=SMALL)
    families = [mix.family_of(i) for i in range(2000)]
    assert abs(families.count("stub") - 1500) < 100  # 5 standard deviations
    assert families == [
        MixtureDataset({"stub": 3, "fashion": 1}, n=2000, seed=1).family_of(i) for i in range(2000)
    ]
    assert families != [
        MixtureDataset({"stub": 3, "fashion": 1}, n=2000, seed=2).family_of(i) for i in range(2000)
    ]
    for i in range(4):
        assert mix[i].family == families[i] and mix[i].id == f"{families[i]}-train-1-{i}"
    only = MixtureDataset({"fashion": 1}, n=3, split="val", cfg=SMALL)
    assert [s.id for s in only] == [s.id for s in WorldDataset("fashion", n=3, split="val", cfg=SMALL)]
    with pytest.raises(ValueError):
        MixtureDataset({"stub": 0}, n=1)


def world_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="vislang")
    add_world_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_generate_writes_every_format(tmp_path, stub, capsys):
    out = tmp_path / "out"
    args = ["--n", "5", "--seed", "2", "--out", str(out), "--width", "64", "--height", "80"]
    formats_args = ["--format", "jsonl", "--format", "llava", "--format", "webdataset", "--shard-size", "2"]
    assert world_command("world", "generate", "--family", "stub", *args, *formats_args) == 0
    records = list(formats.read_jsonl(out))
    assert [r["id"] for r, _ in records] == [f"stub-train-2-{i}" for i in range(5)]
    assert all(images[0].size == (64, 80) for _, images in records)
    assert len(list(out.glob("shard-*.tar"))) == 3 and (out / "llava.json").is_file()
    assert "wrote 5 stub samples" in capsys.readouterr().out

    assert (
        world_command("world", "generate", "--family", "fashion", "--n", "3", "--out", str(tmp_path / "f"))
        == 0
    )
    assert (tmp_path / "f" / "records.jsonl").is_file() and not list((tmp_path / "f").glob("*.tar"))
    assert world_command("world", "generate", "--family", "nope", "--n", "1", "--out", str(tmp_path)) == 2
    with pytest.raises(SystemExit):
        world_command("world", "generate", "--family", "stub", "--n", "1", "--out", "x", "--width", "8")


def test_cli_preview_writes_the_grid(tmp_path, monkeypatch, stub):
    monkeypatch.setitem(FAMILIES, "video", f"{__name__}:make_video_stub")
    for family, n in (("fashion", 6), ("stub", 8), ("video", 3)):
        path = tmp_path / f"{family}.png"
        assert world_command("world", "preview", "--family", family, "--n", str(n), "-o", str(path)) == 0
        with Image.open(path) as grid:
            assert grid.format == "PNG" and grid.size == grid_size(n, 4, 224)


def test_preview_draws_grounding_boxes(stub):
    batch = [generate_sample("stub", "test", 0, i, SMALL) for i in range(12)]
    boxed = [s for s in batch if s.qtype == "ground" and len(s.images) == 1]
    plain = [s for s in batch if s.qtype != "ground"]
    assert boxed and plain
    for chosen, has_box in ((boxed[:1], True), (plain[:1], False)):
        grid = np.asarray(preview_grid(chosen, columns=3, cell=160))
        assert grid.shape == (*grid_size(1, 3, 160)[::-1], 3)
        assert bool(np.all(grid[:160] == BOX_COLOR, axis=-1).any()) == has_box
    assert preview_grid(batch, columns=5, cell=120).size == grid_size(12, 5, 120)
