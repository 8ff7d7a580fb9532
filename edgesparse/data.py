"""User data -> train / validation / calibration splits.

Accepted `--data`:
- an `.npz` with `x_train`/`y_train` (+ optional `x_val`/`y_val`), or `x`/`y` which we split
  deterministically (stratified, seeded); `x` alone is unlabelled data (calibration and
  distillation only); an optional `x_unlabelled` array adds unlabelled calibration inputs;
- a folder with one sub-folder of images per class (sorted names are the class ids).

No data: synthetic calibration inputs, and nothing that needs labels can run. The build
says so loudly and claims no accuracy.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesparse.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
SYNTHETIC_SAMPLES = 128
# Values in one input sample. Checks, calibration and synthetic data draw several whole samples,
# so a model declaring a (100000, 100000) input would die of a MemoryError; an edge model's input
# is far smaller (a 1024x1024 RGB image is 3.1M values).
MAX_SAMPLE_VALUES = 1 << 24


@dataclass
class Dataset:
    x_train: np.ndarray | None
    y_train: np.ndarray | None
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_calib: np.ndarray          # always present: real inputs, or synthetic ones
    labelled: bool
    real: bool
    source: str
    splits: dict[str, str] = field(default_factory=dict)   # which split feeds what, for the report

    def summary(self) -> dict:
        def n(a):
            return None if a is None else int(len(a))
        return {"source": self.source, "real": self.real, "labelled": self.labelled,
                "train": n(self.x_train), "val": n(self.x_val), "calibration": n(self.x_calib),
                "splits": self.splits}


def _fit_shape(x: np.ndarray, input_shape: tuple, what: str) -> np.ndarray:
    """Reshape samples to the model's input when the element counts agree (8x8x1 images -> 64)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise UserError(f"{what} holds {x.dtype} values; give numeric arrays")
    want = tuple(int(d) for d in input_shape)
    if x.ndim == 0:
        raise UserError(f"{what} is a single value, not an array of samples; give an array with one "
                        "sample per row")
    if len(x) == 0:
        raise UserError(f"{what} is empty; give at least one sample")
    got = x.shape[1:]
    if got != want:
        if int(np.prod(got)) != int(np.prod(want)):
            raise UserError(f"{what} samples have shape {got} but the model takes {want}; "
                            "give data shaped like the model's input")
        if not _same_layout(got, want):
            # (3, 32, 32) into a (32, 32, 3) model has the right element count, but a reshape
            # would scramble every image; refusing beats verifying a model on noise.
            hint = ("it looks channels-first: transpose it to channels-last, e.g. "
                    "x.transpose(0, 2, 3, 1)" if sorted(got) == sorted(want) else
                    "reshape or transpose it to the model's input layout yourself")
            raise UserError(f"{what} samples have shape {got} but the model takes {want}; {hint}")
        x = x.reshape((len(x),) + want)
    with np.errstate(over="ignore"):     # values past float32's range become inf, refused just below
        x = x.astype(np.float32, copy=False)
    # The one check of input values: NaN/inf would run through every pass and ship a model
    # measured on nonsense.
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))[0])
        raise UserError(f"{what} holds {int(bad.sum())} NaN or infinite values (the first in sample {first}); "
                        "remove those samples or replace the values with finite numbers")
    return x


def _same_layout(got: tuple, want: tuple) -> bool:
    """Whether a reshape keeps every value where the model expects it: flattening (one side is
    1-D) or adding or dropping size-1 axes (8x8 images into an 8x8x1 input), not a permutation."""
    squeeze = lambda shape: tuple(d for d in shape if d != 1)  # noqa: E731
    return len(got) == 1 or len(want) == 1 or squeeze(got) == squeeze(want)


NOT_A_CLASSIFIER = -1     # label_classes() of a model whose output per sample is not a vector


def label_classes(model) -> int:
    """What labels are scored against: the width of the model's per-sample output vector, or
    NOT_A_CLASSIFIER when its output is a feature map or a sequence (the last axis is then not the
    classes, and labels checked against it gave "labels must be 0..7" for an 8-wide feature map)."""
    shape = tuple(model.output_shape[1:])
    return int(shape[0]) if len(shape) == 1 else NOT_A_CLASSIFIER


def _labels(y: np.ndarray, n: int, num_classes: int | None, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:   # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != n:
        raise UserError(f"{what} has {len(y)} labels for {n} samples; give one label per sample")
    if y.dtype.kind == "f":
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise UserError(f"{what} holds non-integer labels; give class ids 0..N-1")
    elif y.dtype.kind not in "iub":
        raise UserError(f"{what} holds {y.dtype} labels; give integer class ids 0..N-1")
    y = y.astype(np.int64)
    if num_classes == NOT_A_CLASSIFIER:
        raise UserError(f"{what}: the model's output per sample is not one score per class (it is a "
                        "feature map or a sequence), so class labels cannot be scored against it; give x "
                        "without y (agreement with the imported model is still checked), or a classifier")
    if num_classes == 1:
        raise UserError(f"{what}: the model has one output (regression or a single sigmoid), so class "
                        "labels cannot be scored against it; give x without y (nothing claims accuracy)")
    if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(f"{what} has labels in [{y.min()}, {y.max()}] but the model has "
                        f"{num_classes} outputs; labels must be 0..{num_classes - 1}")
    return y


def _split(x: np.ndarray, y: np.ndarray | None, val_fraction: float, seed: int):
    """Deterministic, stratified when labelled: the same data always splits the same way."""
    rng = np.random.default_rng(seed)
    if y is None:
        idx = rng.permutation(len(x))
        cut = int(round(len(x) * (1 - val_fraction)))
        return idx[:cut], idx[cut:]
    train, val = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(members) * val_fraction))
        val.extend(members[:k])
        train.extend(members[k:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val", "x", "y", "x_unlabelled")   # the only arrays read


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _npz_member_size(f, key: str, path: Path) -> None:
    """Refuse, before inflating it, an array that could not fit in this machine's memory, and one whose
    .npy header declares more data than its zip entry holds (numpy would allocate it up front)."""
    info = f.zip.getinfo(f"{key}.npy")
    limit = _memory_bytes()
    if info.file_size > limit:
        raise UserError(f"data file {path}: array {key} declares {info.file_size:,} bytes unpacked, more than "
                        f"this machine's memory ({limit:,}); the file is damaged or too large")
    with f.zip.open(info) as member:
        fmt = np.lib.format
        version = fmt.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            return                               # np.load checks other versions itself
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(member)
    if dtype.hasobject:
        raise UserError(f"data file {path}: array {key} holds Python objects, which edgesparse never loads "
                        "(they would need unpickling); save numeric arrays with numpy.savez")
    declared = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    if declared > info.file_size:
        raise UserError(f"data file {path}: array {key} declares shape {tuple(shape)} ({declared:,} bytes) but holds "
                        f"{info.file_size:,}; the file is damaged; write it again with numpy.savez")


def _check_classes(name: str, labels: dict[str, np.ndarray | None]) -> None:
    """Labels of one class give nothing to tell apart: every accuracy and budget would be meaningless.
    `labels` maps the user's keys (y_train, y_val, or y) to their labels, so the message names them."""
    given = {k: y for k, y in labels.items() if y is not None}
    if given and len(np.unique(np.concatenate(list(given.values())))) < 2:
        keys = " and ".join(given)
        first = int(next(iter(given.values()))[0])
        raise UserError(f"{name}: {keys} {'has' if len(given) == 1 else 'have'} a single class (every label is "
                        f"{first}); give samples of at least two classes, or leave the labels out for "
                        "calibration only")


def _check_pairs(name: str, arrays: dict) -> None:
    """x_val without y_val (or y_val without x_val) is half a split: it would silently make labelled
    data unlabelled (and skip every pass that needs labels), or be ignored."""
    if "y_val" in arrays and "x_val" not in arrays:
        raise UserError(f"{name}: y_val has no x_val (give both or neither)")
    if "x_val" in arrays and ("y_train" in arrays) != ("y_val" in arrays):
        missing = "y_val" if "y_train" in arrays else "y_train"
        raise UserError(f"{name}: {'x_val has no y_val' if missing == 'y_val' else 'x_train has no y_train'} "
                        "(give both or neither; labels on one split only cannot train and score the model)")


def _check_split(name: str, y: np.ndarray | None, n: int, train: np.ndarray, val: np.ndarray,
                 val_fraction: float) -> None:
    """Both halves of a split must hold samples, or fine-tuning and validation have nothing to run on."""
    if len(train) and len(val):
        return
    need = next(m for m in range(2, 10_000) if 1 <= round(m * val_fraction) < m)   # as _split rounds
    if y is None:
        have, fix = f"has {n} sample{'s' if n != 1 else ''}", f"give at least {need} samples, or x_val"
    else:
        have = f"has at most {int(np.bincount(y).max())} sample(s) of any class"
        fix = f"give at least {need} samples of some class, or x_val/y_val"
    raise UserError(f"{name} {have}: too few to hold out a {val_fraction:.0%} validation split; {fix}")


def _load_npz(path: Path):
    """Only the arrays edgesparse uses are inflated (np.load is lazy per key); others stay untouched."""
    # np.load reads anything that is not a zip as a .npy or a pickle: its message for a text file
    # ("contains pickled data ... allow_pickle=") is wrong and points at unsafe loading.
    if not zipfile.is_zipfile(path):
        raise UserError(f"data file {path} is not an .npz archive; write one with numpy.savez "
                        "(x_train/y_train[/x_val/y_val] or x/y)")
    try:
        with np.load(path, allow_pickle=False) as f:
            wanted = [k for k in NPZ_KEYS if k in f.files]
            if not wanted:
                return {k: None for k in f.files}   # only the names: the caller says which it expected
            for k in wanted:
                _npz_member_size(f, k, path)
            return {k: f[k] for k in wanted}
    except UserError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
        raise UserError(f"cannot read data file {path}: {exc}; give an .npz written by numpy.savez") from None


def _load_image_folder(path: Path, input_shape: tuple):
    from PIL import Image  # pillow comes with matplotlib

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"data folder {path} has no class sub-folders; put images in {path}/<class>/")
    if len(input_shape) != 3:
        raise UserError(f"data folder {path} holds images but the model takes {tuple(input_shape)}; "
                        "image folders need a model with (height, width, channels) input")
    h, w, c = (int(d) for d in input_shape)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c)
    if mode is None:
        raise UserError(f"the model takes {c}-channel images; image folders support 1, 3 or 4 channels")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as img:
                    arr = np.asarray(img.convert(mode).resize((w, h)), dtype=np.float32) / 255.0
            except Exception as exc:
                raise UserError(f"cannot read image {f}: {exc}") from None
            xs.append(arr.reshape(h, w, c))
            ys.append(label)
    if not xs:
        raise UserError(f"data folder {path} has class folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return {"x": np.stack(xs), "y": np.array(ys)}


def check_sample_size(shape, where: str = "the model") -> None:
    """Refuse a per-sample input shape too large to draw samples of (MAX_SAMPLE_VALUES)."""
    values = 1
    for d in shape:
        values *= int(d)
    if values > MAX_SAMPLE_VALUES:
        raise UserError(f"{where}: its input shape {tuple(int(d) for d in shape)} holds {values:,} values "
                        f"per sample, more than the {MAX_SAMPLE_VALUES:,} edgesparse takes for an edge "
                        "model; export the model with its real input size")


def synthetic(input_shape: tuple, seed: int = 0, n: int = SYNTHETIC_SAMPLES) -> Dataset:
    check_sample_size(input_shape)
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + tuple(int(d) for d in input_shape), dtype=np.float32)
    return Dataset(None, None, None, None, x_calib=x, labelled=False, real=False,
                   source="synthetic (uniform [0,1), seeded)",
                   splits={"calibration": "synthetic"})


def load_data(path: str | Path | None, input_shape: tuple, num_classes: int | None = None,
              seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """Load `--data` into splits shaped for a model with per-sample `input_shape`."""
    if path is None:
        return synthetic(input_shape, seed)
    path = Path(path)
    if not path.exists():
        raise UserError(f"data {path} does not exist; give an .npz file or a folder of class sub-folders")
    if path.is_file() and path.suffix != ".npz":
        raise UserError(f"data {path} is not an .npz file or a folder of class sub-folders")
    arrays = _load_image_folder(path, input_shape) if path.is_dir() else _load_npz(path)

    unlabelled = arrays.get("x_unlabelled")
    if "x_train" in arrays:
        x_train = _fit_shape(arrays["x_train"], input_shape, f"{path.name}: x_train")
        y_train = arrays.get("y_train")
        if y_train is not None:
            y_train = _labels(y_train, len(x_train), num_classes, f"{path.name}: y_train")
        _check_pairs(path.name, arrays)
        if "x_val" in arrays:
            x_val = _fit_shape(arrays["x_val"], input_shape, f"{path.name}: x_val")
            y_val = arrays.get("y_val")
            if y_val is not None:
                y_val = _labels(y_val, len(x_val), num_classes, f"{path.name}: y_val")
            _check_classes(path.name, {"y_train": y_train, "y_val": y_val})
        else:
            tr, va = _split(x_train, y_train, val_fraction, seed)
            _check_split(f"{path.name}: x_train", y_train, len(x_train), tr, va, val_fraction)
            _check_classes(path.name, {"y_train": y_train})
            x_val = x_train[va]
            y_val = None if y_train is None else y_train[va]
            x_train = x_train[tr]
            y_train = None if y_train is None else y_train[tr]
    elif "x" in arrays:
        x = _fit_shape(arrays["x"], input_shape, f"{path.name}: x")
        y = arrays.get("y")
        if y is not None:
            y = _labels(y, len(x), num_classes, f"{path.name}: y")
        tr, va = _split(x, y, val_fraction, seed)
        _check_split(f"{path.name}: x", y, len(x), tr, va, val_fraction)
        _check_classes(path.name, {"y": y})
        x_train, x_val = x[tr], x[va]
        y_train, y_val = (None, None) if y is None else (y[tr], y[va])
    else:
        raise UserError(f"{path.name} has arrays {sorted(arrays)}; give x_train/y_train[/x_val/y_val] or x/y")

    labelled = y_train is not None and y_val is not None
    x_calib = x_train
    splits = {"calibration": "train", "validation": "val"}
    if labelled:
        splits.update({"fine-tune": "train", "accuracy": "val"})
    if unlabelled is not None:
        extra = _fit_shape(unlabelled, input_shape, f"{path.name}: x_unlabelled")
        x_calib = np.concatenate([x_train, extra])
        splits["calibration"] = "train + x_unlabelled"
        splits["distillation"] = "train + x_unlabelled"
    # Calibration order is shuffled once, deterministically, so "the first N samples" covers all classes.
    x_calib = x_calib[np.random.default_rng(seed).permutation(len(x_calib))]
    return Dataset(x_train, y_train, x_val, y_val, x_calib=x_calib, labelled=labelled, real=True,
                   source=str(path), splits=splits)
