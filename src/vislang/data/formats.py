"""The file formats training reads: PNG + JSONL records, LLaVA conversation JSON, WebDataset shards.

    write_dataset(samples, "out", formats=("jsonl", "llava", "webdataset"))
    out/images/{id}_{k}.png        every image, shared by the JSONL and LLaVA files
    out/records.jsonl              one world-spec section 5 record a line, image paths relative to out/
    out/llava.json                 [{"id", "image" | "images", "conversations": [human, gpt]}]
    out/shard-000000.tar, ...      WebDataset: {key}.png (or {key}.0.png, {key}.1.png, ...) and {key}.json

Writing is deterministic, the same samples give the same bytes: PNGs carry no time or other
metadata, JSON keys are sorted, tar members have fixed mtime, owner and mode. Samples stream
through the writers, so a large dataset never has to be in memory.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from vislang.processing.image import load_image

from .world.sample import Sample

FORMATS = ("jsonl", "llava", "webdataset")
RECORDS = "records.jsonl"
LLAVA = "llava.json"
IMAGE_TOKEN = "<image>"


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG with no metadata: a copy of the pixels only, so image.info (ICC, dpi,
    text chunks a family may have set) never reaches the file."""
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    out = io.BytesIO()
    clean.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def _plain(value):
    # numpy scalars and arrays a family may leave in its ground truth
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value, indent: int | None = None) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=indent, default=_plain)


def shard_key(sample: Sample) -> str:
    """The WebDataset key: the sample id without dots, which WebDataset reads as extension separators."""
    return sample.id.replace(".", "_")


class JsonlWriter:
    """records.jsonl: one record a line."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / RECORDS
        # held open across add() calls, closed by close()
        self.file = open(self.path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115

    def add(self, sample: Sample, image_paths: list[str]) -> None:
        self.file.write(to_json(sample.record(image_paths)) + "\n")

    def close(self) -> list[Path]:
        self.file.close()
        return [self.path]


class LlavaWriter:
    """llava.json: the conversation list of LLaVA's training scripts, one `<image>` per image, in order."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LLAVA
        self.entries: list[dict] = []  # small dicts; the file is one JSON list, written on close

    def add(self, sample: Sample, image_paths: list[str]) -> None:
        entry: dict = {"id": sample.id}
        if len(image_paths) == 1:
            entry["image"] = image_paths[0]
        else:
            entry["images"] = list(image_paths)
        human = f"{IMAGE_TOKEN}\n" * len(image_paths) + sample.question
        entry["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": sample.answer}]
        self.entries.append(entry)

    def close(self) -> list[Path]:
        self.path.write_text(to_json(self.entries, indent=1) + "\n", encoding="utf-8")
        return [self.path]


class WebDatasetWriter:
    """shard-000000.tar, ...: at most `shard_size` samples a shard."""

    def __init__(self, out_dir: Path, shard_size: int = 1000):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.out_dir, self.shard_size = Path(out_dir), shard_size
        self.tar: tarfile.TarFile | None = None
        self.count = 0
        self.paths: list[Path] = []

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))

    def add(self, sample: Sample, pngs: list[bytes]) -> None:
        if self.count % self.shard_size == 0:
            if self.tar is not None:
                self.tar.close()
            self.paths.append(self.out_dir / f"shard-{len(self.paths):06d}.tar")
            self.tar = tarfile.open(self.paths[-1], "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        key = shard_key(sample)
        names = [f"{key}.png"] if len(pngs) == 1 else [f"{key}.{k}.png" for k in range(len(pngs))]
        for name, data in zip(names, pngs):
            self._member(name, data)
        self._member(f"{key}.json", to_json(sample.record(names)).encode())
        self.count += 1

    def close(self) -> list[Path]:
        if self.tar is not None:
            self.tar.close()
        # shards left by an earlier, longer run would be read as part of this one by a shard-*.tar glob
        for stale in self.out_dir.glob("shard-" + "[0-9]" * 6 + ".tar"):
            if stale not in self.paths:
                stale.unlink()
        return self.paths


def write_dataset(
    samples: Iterable[Sample],
    out_dir: str | Path,
    formats: Iterable[str] = ("jsonl",),
    shard_size: int = 1000,
) -> dict[str, list[Path]]:
    """Write `samples` in each of `formats`; returns the files written, by format. Each image is
    encoded once and, for JSONL and LLaVA, stored once under images/."""
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be some of {FORMATS}, got {formats}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict = {}
    if "jsonl" in formats:
        writers["jsonl"] = JsonlWriter(out_dir)
    if "llava" in formats:
        writers["llava"] = LlavaWriter(out_dir)
    if "webdataset" in formats:
        writers["webdataset"] = WebDatasetWriter(out_dir, shard_size)
    try:
        for sample in samples:
            pngs = [png_bytes(image) for image in sample.images]
            if "jsonl" in writers or "llava" in writers:
                paths = [f"images/{sample.id}_{k}.png" for k in range(len(pngs))]
                (out_dir / "images").mkdir(exist_ok=True)
                for path, data in zip(paths, pngs):
                    (out_dir / path).write_bytes(data)
                for name in ("jsonl", "llava"):
                    if name in writers:
                        writers[name].add(sample, paths)
            if "webdataset" in writers:
                writers["webdataset"].add(sample, pngs)
    finally:
        written = {name: writer.close() for name, writer in writers.items()}
    return written


def write_jsonl(samples: Iterable[Sample], out_dir: str | Path) -> Path:
    return write_dataset(samples, out_dir, ["jsonl"])["jsonl"][0]


def write_llava(samples: Iterable[Sample], out_dir: str | Path) -> Path:
    return write_dataset(samples, out_dir, ["llava"])["llava"][0]


def write_webdataset(samples: Iterable[Sample], out_dir: str | Path, shard_size: int = 1000) -> list[Path]:
    return write_dataset(samples, out_dir, ["webdataset"], shard_size)["webdataset"]


# ---- readers: images go through the one safe loader, decoded as RGB ----


def read_jsonl(out_dir: str | Path) -> Iterator[tuple[dict, list[Image.Image]]]:
    """(record, images) for each line of out_dir/records.jsonl."""
    out_dir = Path(out_dir)
    with open(out_dir / RECORDS, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            yield record, [load_image(out_dir / path) for path in record["images"]]


def read_llava(out_dir: str | Path) -> Iterator[tuple[dict, list[Image.Image]]]:
    """(entry, images) for each conversation of out_dir/llava.json."""
    out_dir = Path(out_dir)
    for entry in json.loads((out_dir / LLAVA).read_text(encoding="utf-8")):
        paths = [entry["image"]] if "image" in entry else entry["images"]
        yield entry, [load_image(out_dir / path) for path in paths]


def _members_by_key(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    # WebDataset stores a sample's files next to each other: group consecutive members by key
    key, group = None, {}
    for member in tar:
        if not member.isfile():
            continue
        member_key = member.name.split(".", 1)[0]
        if group and member_key != key:
            yield key, group
            group = {}
        key = member_key
        group[member.name] = tar.extractfile(member).read()
    if group:
        yield key, group


def read_webdataset(shards: Iterable[str | Path]) -> Iterator[tuple[dict, list[Image.Image]]]:
    """(record, images) for each sample of the shards, in order, streamed; a record names its images."""
    for shard in shards:
        with tarfile.open(shard, "r") as tar:
            for key, group in _members_by_key(tar):
                record = json.loads(group[f"{key}.json"])
                yield record, [load_image(group[name]) for name in record["images"]]
