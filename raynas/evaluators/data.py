"""Small image datasets with no downloads: deterministic, stratified train/val/test splits."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".npy")
DATASET_KINDS: tuple[str, ...] = ("digits", "npz", "folder")


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train/val/test arrays of one dataset: ``x`` float32 NCHW, ``y`` int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def in_channels(self) -> int:
        """Number of image channels (C of NCHW)."""
        return int(self.x_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def sizes(self) -> dict[str, int]:
        """Number of examples in each split."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


# --------------------------------------------------------------------------- splitting
def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training data, "
            f"got {val_fraction} + {test_fraction}"
        )


def _split_counts(
    counts: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """Items per (fraction, class): ``round(N * f)`` per part, spread over classes in proportion.

    Leftover items go to the largest remainders (ties drawn at random); every class keeps
    at least one item for the remainder part.
    """
    left = counts.copy()
    takes = np.zeros((len(fractions), len(counts)), dtype=np.int64)
    for k, frac in enumerate(fractions):
        quota = counts * frac
        take = np.floor(quota).astype(np.int64)
        extra = math.floor(counts.sum() * frac + 0.5) - int(take.sum())
        order = np.lexsort((rng.random(len(counts)), take - quota))
        take[order[: max(extra, 0)]] += 1
        takes[k] = np.minimum(take, np.maximum(left - 1, 0))
        left -= takes[k]
    return takes


def stratified_split(
    y: np.ndarray, fractions: tuple[float, ...], *, seed: int
) -> list[np.ndarray]:
    """Indices of ``y`` split by class into parts of the given fractions plus a remainder.

    The remainder (first returned part, the training split) keeps at least one item of every
    class. The same ``y`` and ``seed`` give the same parts; each part is in random order.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    takes = _split_counts(counts, fractions, rng)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c, cls in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == cls))
        start = 0
        for k in range(len(fractions)):
            parts[k + 1].append(idx[start : start + takes[k, c]])
            start += takes[k, c]
        parts[0].append(idx[start:])
    out = []
    for chunks in parts:
        joined = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        out.append(rng.permutation(joined).astype(np.int64))
    return out


def _to_nchw(x: np.ndarray, *, layout: str | None = None) -> np.ndarray:
    """Return images as N x C x H x W.

    3-D input (N, H, W) gets one channel. 4-D input is NHWC when its last axis has 1, 3 or 4
    entries and axis 1 does not (or ``layout="nhwc"``); otherwise it is taken as NCHW.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be a 3-D (N,H,W) or 4-D array, got shape {x.shape}")
    if layout is not None and layout.lower() not in ("nchw", "nhwc"):
        raise ValueError(f"layout must be 'nchw', 'nhwc' or None, got {layout!r}")
    if layout is None:
        nhwc = x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
    else:
        nhwc = layout.lower() == "nhwc"
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if nhwc else x


def _as_float(x: np.ndarray) -> np.ndarray:
    """Float32 images; integer pixels (e.g. uint8) are scaled from [0, 255] to [0, 1]."""
    if np.issubdtype(x.dtype, np.integer):
        return (x.astype(np.float32) / 255.0).astype(np.float32)
    return x.astype(np.float32, copy=False)


def _labels(y: Any) -> tuple[np.ndarray, int]:
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.reshape(len(y), -1)
        if y.shape[1] != 1:
            raise ValueError(f"labels must be one class index per example, got shape {y.shape}")
        y = y[:, 0]
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integer class indices; map names to indices first")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {int(y.min())}")
    return y, int(y.max()) + 1 if len(y) else 0


def _assemble(
    name: str,
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    normalize: bool,
) -> DatasetSplits:
    """Normalise with the training split's per-channel mean and std and build the splits."""
    x_train = parts["train"][0]
    if normalize and len(x_train):
        mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
        std = x_train.std(axis=(0, 2, 3), keepdims=True)
        std = np.where(std > 1e-8, std, 1.0)
        parts = {k: (((x - mean) / std).astype(np.float32), y) for k, (x, y) in parts.items()}
    splits = DatasetSplits(
        name=name,
        x_train=parts["train"][0],
        y_train=parts["train"][1],
        x_val=parts["val"][0],
        y_val=parts["val"][1],
        x_test=parts["test"][0],
        y_test=parts["test"][1],
        num_classes=num_classes,
    )
    logger.debug("dataset %s: %s, input %s", name, splits.sizes(), splits.input_shape)
    return splits


def _split_arrays(
    name: str, x: np.ndarray, y: np.ndarray, *, seed: int, val_fraction: float,
    test_fraction: float, normalize: bool, num_classes: int | None = None,
) -> DatasetSplits:
    _check_fractions(val_fraction, test_fraction)
    y, found = _labels(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    train, val, test = stratified_split(y, (val_fraction, test_fraction), seed=seed)
    parts = {k: (x[i], y[i]) for k, i in (("train", train), ("val", val), ("test", test))}
    return _assemble(name, parts, num_classes or found, normalize=normalize)


# --------------------------------------------------------------------------- loaders
def load_digits(
    *, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2, normalize: bool = True
) -> DatasetSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as 1 x 8 x 8 images."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    return _split_arrays(
        "digits", x, bunch.target, seed=seed, val_fraction=val_fraction,
        test_fraction=test_fraction, normalize=normalize, num_classes=10,
    )


def load_arrays(
    path_or_arrays: str | os.PathLike[str] | Mapping[str, Any] | tuple[Any, Any],
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    normalize: bool = True,
    layout: str | None = None,
    name: str | None = None,
) -> DatasetSplits:
    """Images from an ``.npz`` file or in-memory arrays.

    Accepts keys ``x``, ``y`` (split three ways), or ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` (val is cut from train and ``test_fraction`` is ignored); a mapping with the
    same keys; or an ``(x, y)`` tuple. Layout rules are those of ``_to_nchw``; integer pixels
    are scaled to [0, 1].
    """
    if isinstance(path_or_arrays, (str, os.PathLike)):
        path = Path(path_or_arrays)
        if not path.is_file():
            raise ValueError(f"dataset file {str(path)!r} does not exist; give an existing .npz")
        with np.load(path, allow_pickle=False) as npz:
            arrays: dict[str, Any] = {k: npz[k] for k in npz.files}
        name = name or path.stem
    elif isinstance(path_or_arrays, Mapping):
        arrays = dict(path_or_arrays)
    elif isinstance(path_or_arrays, tuple) and len(path_or_arrays) == 2:
        arrays = {"x": path_or_arrays[0], "y": path_or_arrays[1]}
    else:
        raise ValueError(
            f"load_arrays takes an .npz path, a mapping of arrays or an (x, y) tuple, "
            f"got {type(path_or_arrays).__name__}"
        )
    name = name or "arrays"
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        _check_fractions(val_fraction, 0.0)
        x_tr = _as_float(_to_nchw(arrays["x_train"], layout=layout))
        x_te = _as_float(_to_nchw(arrays["x_test"], layout=layout))
        y_tr, n_tr = _labels(arrays["y_train"])
        y_te, n_te = _labels(arrays["y_test"])
        train, val = stratified_split(y_tr, (val_fraction,), seed=seed)
        parts = {"train": (x_tr[train], y_tr[train]), "val": (x_tr[val], y_tr[val]),
                 "test": (x_te, y_te)}
        return _assemble(name, parts, max(n_tr, n_te), normalize=normalize)
    if {"x", "y"} <= arrays.keys():
        x = _as_float(_to_nchw(arrays["x"], layout=layout))
        return _split_arrays(
            name, x, arrays["y"], seed=seed, val_fraction=val_fraction,
            test_fraction=test_fraction, normalize=normalize,
        )
    raise ValueError(
        f"arrays must hold 'x' and 'y', or 'x_train', 'y_train', 'x_test' and 'y_test'; "
        f"got keys {sorted(arrays)}"
    )


def _read_image(path: Path, image_size: int | None) -> np.ndarray:
    """One image as a C x H x W array (uint8 or float), resized if ``image_size`` is given."""
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        img = _to_nchw(arr[None])[0]
        if image_size is not None and img.shape[1:] != (image_size, image_size):
            import torch

            t = torch.from_numpy(_as_float(img))[None]
            img = torch.nn.functional.interpolate(
                t, size=(image_size, image_size), mode="bilinear", align_corners=False
            )[0].numpy()
        return img
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            f"reading {path.name} needs Pillow: pip install pillow (or store images as .npy)"
        ) from None
    with Image.open(path) as im:
        im = im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB")
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return _to_nchw(np.asarray(im)[None], layout="nhwc")[0]


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    image_size: int | None = None,
    normalize: bool = True,
    name: str | None = None,
) -> DatasetSplits:
    """Images in ``root/<class_name>/*.png|jpg|npy`` (torchvision ImageFolder layout).

    Class indices follow sorted class-folder names. Images must share one size unless
    ``image_size`` resizes them to a square; greyscale images are repeated to RGB when the
    folder mixes greyscale and colour.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {str(root)!r} has no class sub-folders (root/<class>/img)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        for file in sorted((root / cls).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_read_image(file, image_size))
                labels.append(index)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(root)!r}")
    if len({img.shape[1:] for img in images}) > 1:
        raise ValueError(
            f"images under {str(root)!r} differ in size; pass image_size=... to resize them"
        )
    if len({img.shape[0] for img in images}) > 1:
        images = [np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3] for img in images]
    x = np.stack([_as_float(img) for img in images])
    return _split_arrays(
        name or root.name, x, np.asarray(labels), seed=seed, val_fraction=val_fraction,
        test_fraction=test_fraction, normalize=normalize, num_classes=len(classes),
    )


# --------------------------------------------------------------------------- dispatch
def resolve_spec(name_or_spec: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Check a dataset spec without loading it; return ``{"name", "kind", "path"?, ...}``.

    Paths become absolute, so a spec resolved on the driver stays valid in a worker whose
    working directory differs.
    """
    if isinstance(name_or_spec, Mapping):
        spec = dict(name_or_spec)
        name = spec.pop("name", None)
        kind = spec.pop("kind", None)
        path = spec.pop("path", None)
        if kind is None and name in DATASET_KINDS:
            kind = name
        if kind is None and path is None:
            raise ValueError(
                f"unknown dataset {name!r}; known: 'digits', or give a 'path' "
                f"(an .npz file or an image folder)"
            )
    elif isinstance(name_or_spec, (str, os.PathLike)):
        text = os.fspath(name_or_spec)
        spec, name, kind, path = {}, None, None, None
        if text.lower() == "digits":
            kind = "digits"
        elif text.startswith("npz:"):
            kind, path = "npz", text[4:]
        elif text.startswith("folder:"):
            kind, path = "folder", text[7:]
        elif os.sep in text or "/" in text or text.endswith(".npz") or Path(text).exists():
            path = text
        else:
            raise ValueError(
                f"unknown dataset {text!r}; use 'digits', 'npz:/path/file.npz', or the path "
                f"of an image folder (root/<class>/*.png)"
            )
    else:
        raise ValueError(f"dataset must be a name, a path or a mapping, got {name_or_spec!r}")
    if kind is not None and kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(DATASET_KINDS)}")
    if kind != "digits":
        if path is None:
            raise ValueError(f"dataset kind {kind!r} needs a 'path'")
        resolved = Path(os.fspath(path)).expanduser().absolute()
        if not resolved.exists():
            raise ValueError(f"dataset path {str(resolved)!r} does not exist")
        kind = kind or ("folder" if resolved.is_dir() else "npz")
        spec["path"] = str(resolved)
    spec["kind"] = kind
    spec["name"] = name or (kind if kind == "digits" else Path(spec["path"]).stem)
    return spec


def load_dataset(
    name_or_spec: str | os.PathLike[str] | Mapping[str, Any], **kw: Any
) -> DatasetSplits:
    """Load ``"digits"``, ``"npz:/path"``, an image-folder path, or ``{name, path, ...}``.

    Extra mapping keys and ``kw`` are passed to the loader (``seed``, ``val_fraction``, ...).
    """
    spec = resolve_spec(name_or_spec)
    kind = spec.pop("kind")
    options = {**spec, **kw}
    if kind == "digits":
        options.pop("name", None)
        return load_digits(**options)
    path = options.pop("path")
    if kind == "npz":
        return load_arrays(path, **options)
    return load_image_folder(path, **options)


def batches(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    rng: np.random.Generator | torch.Generator | int | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches as torch tensors, in a seeded random order if ``shuffle``."""
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    xt = torch.as_tensor(x)
    yt = torch.as_tensor(y)
    if len(xt) != len(yt):
        raise ValueError(f"x has {len(xt)} examples but y has {len(yt)}")
    n = len(xt)
    if not shuffle:
        order = torch.arange(n)
    elif isinstance(rng, torch.Generator):
        order = torch.randperm(n, generator=rng)
    else:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        order = torch.from_numpy(gen.permutation(n))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield xt[idx], yt[idx]
