"""Read a VQA-style dataset a user brings: JSONL, JSON, CSV, or a Hugging Face datasets parquet / arrow file.

    rows = load_dataset("my_vqa/test.jsonl", limit=100)
    rows[0].question, rows[0].answers, open_images(rows[0])

One row is one question about one or more images. Columns, by the first name present:

    question   question | query
    answer     answers | answer | label      a string, or a list (VQAv2's 10 human answers; in CSV a
                                             JSON list); VQAv2's [{"answer": ...}, ...] dicts too
    image      image | images | image_path   a path (relative to the dataset file's folder, or
                                             absolute), a {"bytes", "path"} struct as `datasets`
                                             writes it, or a list of these (in CSV a JSON list)
    qtype      qtype | question_type         optional: the group a row is reported in
    metric     metric                        optional: vqa, exact, anls, iou or caption
    id         id | question_id              optional: the row number otherwise

A gold box can be the answer text "[x1, y1, x2, y2]" or a list of four numbers. Arrow files are read
in both IPC formats: the stream format of the `datasets` cache and the random-access file format.
A folder is read as all of its .parquet (or else .arrow) files, in name order.

Images are checked when the rows are read (the header only: the file is there and is an image of an
allowed format) and decoded by open_images when asked, through the project's safe loader and its
size limits; every failure names the file and the row.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vislang.errors import ImageError, VislangError
from vislang.processing.image import image_header, load_image

COLUMNS: dict[str, tuple[str, ...]] = {
    "question": ("question", "query"),
    "answer": ("answers", "answer", "label"),
    "image": ("image", "images", "image_path"),
    "qtype": ("qtype", "question_type"),
    "metric": ("metric",),
    "id": ("id", "question_id"),
}
REQUIRED = ("question", "answer", "image")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
SUFFIXES |= {".parquet": "parquet", ".arrow": "arrow"}

ImageRef = str | bytes  # an absolute path, or encoded image bytes


class DatasetError(VislangError, ValueError):
    """A dataset file that cannot be read as VQA rows: its message names the file, the row and the fix."""


@dataclass
class VqaRow:
    id: str
    question: str
    answers: list[str]
    images: list[ImageRef]
    qtype: str | None = None
    metric: str | None = None
    where: str = ""  # "line 7 of data.jsonl": where an error about this row points


def dataset_format(path: str | Path) -> str:
    """jsonl, json, csv, parquet or arrow, from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(
            f"{path}: unknown dataset format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(sorted(SUFFIXES))}"
        )
    return SUFFIXES[suffix]


def dataset_files(path: str | Path) -> list[Path]:
    """The file itself, or a folder's .parquet files (else its .arrow files), sorted by name."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    if path.is_file():
        dataset_format(path)
        return [path]
    for suffix in (".parquet", ".arrow"):
        files = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
        if files:
            return files
    raise DatasetError(f"{path} is a folder with no .parquet or .arrow files; pass a dataset file")


# ---- records: (where, dict) from each format --------------------------------------------------------


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"line {number} of {path.name}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}: {where} is not JSON: {e.msg}") from e
            if not isinstance(record, dict):
                raise DatasetError(f"{path}: {where} is a JSON {type(record).__name__}, not an object")
            yield where, record


def _json_records(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not JSON: {e.msg} at line {e.lineno}") from e
    if not isinstance(records, list):
        raise DatasetError(
            f"{path}: a .json dataset is a list of row objects, got a {type(records).__name__}"
        )
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: item {i} is a JSON {type(record).__name__}, not an object")
        yield f"item {i} of {path.name}", record


def _csv_records(path: Path) -> Iterator[tuple[str, dict]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        _columns(reader.fieldnames or [], path, "the header")  # name missing columns before any row
        for number, record in enumerate(reader, 1):
            yield f"row {number} of {path.name}", record


def _arrow_batches(path: Path):
    import pyarrow as pa

    try:
        yield from pa.ipc.open_stream(pa.memory_map(str(path)))  # the `datasets` cache format
        return
    except pa.ArrowInvalid:
        pass
    try:
        yield from pa.ipc.open_file(pa.memory_map(str(path))).read_all().to_batches()
    except pa.ArrowInvalid as e:
        raise DatasetError(f"{path} is not an Arrow IPC stream or file: {e}") from e


def _parquet_batches(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except pa.ArrowInvalid as e:
        raise DatasetError(f"{path} is not a parquet file: {e}") from e
    yield from file.iter_batches(batch_size=256)


def _table_records(path: Path, batches) -> Iterator[tuple[str, dict]]:
    number, checked = 0, False
    for batch in batches:
        if not checked:
            _columns(batch.schema.names, path, "the schema")
            checked = True
        for record in batch.to_pylist():
            number += 1
            yield f"row {number} of {path.name}", record


def _records(path: Path) -> Iterator[tuple[str, dict]]:
    kind = dataset_format(path)
    if kind in ("parquet", "arrow"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise ImportError(f"reading {kind} files needs pyarrow: pip install pyarrow") from e
        batches = _parquet_batches(path) if kind == "parquet" else _arrow_batches(path)
        return _table_records(path, batches)
    return {"jsonl": _jsonl_records, "json": _json_records, "csv": _csv_records}[kind](path)


# ---- records -> rows ------------------------------------------------------------------------------


def _columns(names, path: Path, where: str) -> dict[str, str]:
    """field -> the column that holds it; names every required field that has no column."""
    names = list(names)
    found = {f: next((c for c in accepted if c in names), None) for f, accepted in COLUMNS.items()}
    missing = [f for f in REQUIRED if found[f] is None]
    if missing:
        accepted = "; ".join(f"{f}: {' | '.join(COLUMNS[f])}" for f in missing)
        raise DatasetError(
            f"{path}: {where} lacks the column(s) {', '.join(missing)} (accepted names: {accepted}); "
            f"its columns are: {', '.join(map(str, names)) or '(none)'}"
        )
    return {f: c for f, c in found.items() if c is not None}


def _from_text(value, as_json: bool):
    # CSV cells hold lists as JSON ("["2", "two"]"); anything else stays the text it is
    if as_json and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _answers(value, where: str) -> list[str]:
    if isinstance(value, list | tuple) and len(value) == 4 and all(_is_number(v) for v in value):
        return ["[" + ", ".join(f"{v:g}" for v in value) + "]"]  # one box, as text parse_box reads
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list | tuple) and value:
        answers = []
        for item in value:
            if isinstance(item, dict) and "answer" in item:
                item = item["answer"]  # VQAv2 on the Hub: {"answer", "answer_confidence", "answer_id"}
            if isinstance(item, list | tuple):
                answers += _answers(item, where)  # several gold boxes
            elif item is not None:
                answers.append(str(item))
        if answers:
            return answers
    raise DatasetError(f"{where}: the answer must be a string or a list of strings, got {value!r}")


def _image_refs(value, base: Path, where: str) -> list[ImageRef]:
    items = value if isinstance(value, list | tuple) else [value]
    refs: list[ImageRef] = []
    for item in items:
        if isinstance(item, dict):  # `datasets` Image feature: bytes when embedded, else a path
            item = item.get("bytes") or item.get("path")
        if isinstance(item, bytes | bytearray | memoryview):
            refs.append(bytes(item))
        elif isinstance(item, str) and item.strip():
            refs.append(str(base / item) if not os.path.isabs(item) else item)
        else:
            raise DatasetError(f"{where}: no image (a path, or bytes), got {item!r}")
    if not refs:
        raise DatasetError(f"{where}: the image list is empty")
    return refs


def _text(value) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _row(record: dict, where: str, index: int, path: Path, check_images: bool) -> VqaRow:
    columns = _columns(record.keys(), path, where)
    as_json = path.suffix.lower() == ".csv"
    question = _text(record[columns["question"]])
    if question is None:
        raise DatasetError(f"{path}: {where}: the question is empty")
    answer = _from_text(record[columns["answer"]], as_json)
    images = _image_refs(_from_text(record[columns["image"]], as_json), path.parent, f"{path}: {where}")
    if check_images:
        for ref in images:
            try:
                image_header(ref)
            except ImageError as e:
                raise DatasetError(f"{path}: {where}: unreadable image: {e}") from e
    optional = {f: _text(record.get(columns[f])) if f in columns else None for f in ("qtype", "metric", "id")}
    return VqaRow(
        id=optional["id"] or str(index),
        question=question,
        answers=_answers(answer, f"{path}: {where}"),
        images=images,
        qtype=optional["qtype"],
        metric=optional["metric"],
        where=where,
    )


def load_dataset(path: str | Path, limit: int | None = None, check_images: bool = True) -> list[VqaRow]:
    """The first `limit` rows (all when None) of a dataset file or folder; see the module docstring."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    rows: list[VqaRow] = []
    for file in dataset_files(path):
        for where, record in _records(file):
            if limit is not None and len(rows) >= limit:
                return rows
            rows.append(_row(record, where, len(rows), file, check_images))
    if not rows:
        raise DatasetError(f"{path} holds no rows")
    return rows


def open_images(row: VqaRow) -> list[Image.Image]:
    """The row's images decoded as RGB through the safe loader (its default size limits)."""
    try:
        return [load_image(ref) for ref in row.images]
    except ImageError as e:
        raise DatasetError(f"{row.where}: unreadable image: {e}") from e
