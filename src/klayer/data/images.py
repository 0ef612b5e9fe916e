"""Image files: PNG, JPEG and the other formats Pillow reads, as rows in CIFAR-10's layout.

A row is what the networks take: ``(C * H * W,)`` ``uint8`` values, channel-major like CIFAR-10
(the 1024 red values of a 32x32 image row by row, then the green, then the blue). An image is
read with Pillow, turned upright (EXIF orientation), converted to RGB (``"L"``, grey, for a
one-channel model; an alpha channel is dropped; 16-bit grey, Pillow's modes ``"I;16"`` and
``"I"``, is scaled to 8 bits, and an ``"I"`` image with values outside 0..65535 (a 32-bit integer
TIFF) is refused in one line as a float image out of range is; a float image, Pillow's mode ``"F"``, is read by
:func:`float_to_8bit`'s rule), centre-cropped to the target's aspect ratio and resized (bicubic,
antialiased) to ``H x W``.

Float images (32-bit float TIFF, PFM, FITS, and any other file Pillow opens in its one float
mode, ``"F"``) have no fixed scale, so the values decide it: all within [0, 1] are taken for the 0..1
convention and multiplied by 255; otherwise all within [0, 255] are taken as they are; both are
rounded to whole 8-bit values. A NaN or infinite value, or a value outside [0, 255], is refused in
one line naming the file and what was found (an image folder skips such a file and says so, as it
does an unreadable one). An image whose values all lie in [0, 1] is read as 0..1 even if it was
meant as a very dark 0..255 image.

An image folder is the torchvision ``ImageFolder`` convention: one sub-folder per class, named
after the class, with the images anywhere below it; the classes are the sub-folders' names in
sorted order (bytes that are not UTF-8 written as ``\\xNN``). If the folder's sub-folders are all
split names (``train``, ``test``, ``val``, ``valid``, ``validation``), ``train/`` and ``test/`` are
the splits and must both be there (a ``val/`` is not read: the validation images are held out of
``train/``); otherwise a seeded, stratified ``test_fraction`` of each class is held out as the test
set.

Pillow is optional (``pip install 'klayer[images]'``).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import DataError, KlayerError
from .cifar10 import RawData

__all__ = [
    "IMAGE_SUFFIXES",
    "infer_image_shape",
    "model_image_shape",
    "image_to_row",
    "float_to_8bit",
    "read_image",
    "row_to_image",
    "list_files",
    "class_name",
    "load_image_folder",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise KlayerError("reading images needs Pillow: pip install 'klayer[images]'") from None
    return Image, ImageOps


def infer_image_shape(input_size: int) -> tuple[int, int, int] | None:
    """``(3, s, s)`` when ``input_size = 3 s^2``, ``(1, s, s)`` when it is ``s^2`` (``s >= 8``),
    else None.

    The two cannot both hold (``3 s^2 = t^2`` has no positive integer solution), so square images
    are recognized without ambiguity: 3072 -> (3, 32, 32), 784 -> (1, 28, 28). Widths below 64
    (smaller than 8 x 8) are taken for plain features."""
    for channels in (3, 1):
        if input_size % channels == 0:
            s = math.isqrt(input_size // channels)
            if s >= 8 and s * s * channels == input_size:
                return (channels, s, s)
    return None


def model_image_shape(meta: dict, input_size: int) -> tuple[int, int, int] | None:
    """The image shape a model takes: its ``image_shape`` metadata field when it is present and
    consistent with the input size, else :func:`infer_image_shape`."""
    shape = meta.get("image_shape")
    if (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        and shape[0] in (1, 3)
        and math.prod(shape) == input_size
    ):
        return tuple(shape)
    return infer_image_shape(input_size)


class _FloatRangeError(ValueError):
    """An image whose values klayer does not scale to 8 bits: a float image outside
    :func:`float_to_8bit`'s rule, an integer image outside 0..65535."""


def float_to_8bit(values) -> np.ndarray:
    """A float image's values as 8-bit grey, by the module's rule: all within [0, 1] times 255,
    else all within [0, 255] as they are, rounded. ValueError (one line: what was found, what is
    read) for a NaN or infinite value, or a value outside [0, 255]."""
    a = np.asarray(values)
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    bad = np.count_nonzero(~np.isfinite(a))
    rule = "float images are read with every value within [0, 1] (scaled by 255) or within [0, 255]"
    if bad:
        raise _FloatRangeError(f"float image with {bad} NaN or infinite value(s) among {a.size} pixels; {rule}")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > 255:
        found = " to ".join(np.format_float_positional(v, trim="-") for v in (lo, hi))  # as stored
        raise _FloatRangeError(f"float image with values from {found}; {rule}")
    scale = 255.0 if hi <= 1 else 1.0
    return np.round(a.astype(np.float64) * scale).astype(np.uint8)


def image_to_row(img, image_shape) -> np.ndarray:
    """A Pillow image as one ``(C * H * W,)`` uint8 row, channel-major (see the module notes).

    Raises ValueError for a float image outside :func:`float_to_8bit`'s rule and for an integer
    image (Pillow's 32-bit ``"I"``) with values outside 0..65535."""
    Image, ImageOps = _pillow()
    C, H, W = image_shape
    img = ImageOps.exif_transpose(img)
    if img.mode == "F":
        # convert() would clip the values to 0..255: a 0..1 image came out nearly black
        img = Image.fromarray(float_to_8bit(img))
    if img.mode == "I" or img.mode.startswith("I;16"):
        # 16-bit grey: convert() would clip it at 255, not scale it. Pillow opens 16-bit PNG and
        # TIFF as "I;16", 16-bit PGM (any maxval above 255, rescaled to 0..65535) as 32-bit "I"
        a = np.asarray(img, np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):  # a 32-bit integer TIFF: clipping hid it
            found = f"{int(a.min())} to {int(a.max())}"
            raise _FloatRangeError(
                f"integer image with values from {found}; integer images are read as 16-bit (0..65535)"
            )
        img = Image.fromarray(np.round(a / 257).astype(np.uint8))
    img = img.convert("RGB" if C == 3 else "L")
    img = ImageOps.fit(img, (W, H), method=Image.Resampling.BICUBIC)
    a = np.asarray(img, dtype=np.uint8)
    if C == 3:
        a = a.transpose(2, 0, 1)
    return np.ascontiguousarray(a).reshape(-1)


def row_to_image(row: np.ndarray, image_shape) -> np.ndarray:
    """One channel-major row as an ``(H, W, 3)`` or ``(H, W)`` array, for showing it."""
    C, H, W = image_shape
    a = np.asarray(row).reshape(C, H, W)
    return a.transpose(1, 2, 0) if C == 3 else a[0]


def read_image(path, image_shape) -> np.ndarray:
    """Read one image file as a row (see :func:`image_to_row`).

    Raises
    ------
    DataError
        The file is missing, not an image, truncated or otherwise unreadable (one line naming it).
    """
    Image, _ = _pillow()
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return image_to_row(img, image_shape)
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not an image") from None
    except Image.UnidentifiedImageError:
        raise DataError(path, "not an image Pillow can read") from None
    except _FloatRangeError as e:  # a readable image whose values klayer does not read
        raise DataError(path, str(e)) from None
    except Exception as e:  # decoders of damaged files raise many kinds of errors
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(path, f"unreadable image ({reason})") from None


def class_name(folder_name: str) -> str:
    """The class name of a class folder: its name, with any byte that is not UTF-8 (a folder
    named in Latin-1 or cp1252, e.g. unpacked from an old zip file) written as ``\\xNN``.

    Python holds such bytes as lone surrogates, which cannot be printed, drawn or stored as
    text: the name would break every place a class is shown."""
    return os.fsencode(folder_name).decode("utf-8", "backslashreplace")


def _visible(p: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in p.relative_to(base).parts)


def list_files(path) -> list[Path]:
    """``path`` itself when it is a file (or does not exist); every non-hidden file below it,
    sorted, when it is a folder."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and _visible(p, path))


def _warn(message: str) -> None:
    print(f"klayer: warning: {message}", file=sys.stderr)


def _read_tree(base: Path, classes, image_shape, log) -> tuple[np.ndarray, np.ndarray, int]:
    files = []
    for c, name in enumerate(classes):
        folder = base / name
        if not folder.is_dir():
            raise DataError(folder, f"class folder missing (the classes are {', '.join(classes)})")
        found = list_files(folder)
        if not found:
            raise DataError(folder, "class folder holds no files")
        files += [(f, c) for f in found]
    X = np.empty((len(files), math.prod(image_shape)), np.uint8)
    y = np.empty(len(files), np.int64)
    n = skipped = 0
    for f, c in files:
        try:
            X[n] = read_image(f, image_shape)
        except DataError as e:
            log(f"{e} (skipped)")
            skipped += 1
            continue
        y[n] = c
        n += 1
    counts = np.bincount(y[:n], minlength=len(classes))
    for c in np.flatnonzero(counts == 0):
        raise DataError(base / classes[c], "class folder holds no readable images")
    return X[:n], y[:n], skipped


SPLIT_NAMES = ("train", "test", "val", "valid", "validation")


def _split_layout(root: Path, log) -> bool:
    """True when ``root``'s sub-folders are splits, not classes: when every one is named as a split
    (``train``, ``test``, ``val``, ``valid``, ``validation``). Such a layout needs ``train/`` and
    ``test/`` (DataError otherwise); a validation folder is not read (the validation images are held
    out of ``train/``, ``data.n_val``), and ``log`` says so. A class folder named ``train`` among
    others (bus/, car/, train/) is a class."""
    names = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if not names or not names <= set(SPLIT_NAMES):
        return False
    missing = [n for n in ("train", "test") if n not in names]
    if missing:
        found = ", ".join(f"{n}/" for n in SPLIT_NAMES if n in names)
        raise DataError(
            root,
            f"holds the splits {found} but no {missing[0]}/: a split image folder needs train/ and test/ "
            "(the validation images are held out of train/), or one sub-folder per class without splits",
        )
    for n in sorted(names - {"train", "test"}):
        log(f"{root / n}: not read; the validation images are held out of train/ (data.n_val)")
    return True


def load_image_folder(root, image_shape=(3, 32, 32), test_fraction: float = 0.2, seed: int = 0, log=_warn) -> RawData:
    """Read an image folder (one sub-folder per class) into ``train`` and ``test`` batches.

    Parameters
    ----------
    root : the folder; with ``train/`` and ``test/`` sub-folders those are the splits.
    image_shape : ``(C, H, W)`` of the rows, ``C`` 3 (RGB) or 1 (grey).
    test_fraction : share of each class held out as the test set when there is no ``test/``.
    seed : the held-out split and the order of the training rows (shuffled, so that a validation
        set taken from the end of them is a random sample).
    log : called with one line per unreadable file, which is skipped.

    Returns
    -------
    RawData with ``batches = {"train": (X, y), "test": (X, y)}``, ``X`` uint8 ``(N, C*H*W)``,
    layout ``"images"``, the class names and ``image_shape``.

    Raises
    ------
    DataError
        No such folder, fewer than two class folders, a class folder without readable images, a
        ``test/`` class that is not in ``train/``, or too few images to hold out a test set.
    """
    root = Path(root)
    image_shape = tuple(int(v) for v in image_shape)
    if len(image_shape) != 3 or image_shape[0] not in (1, 3) or min(image_shape) < 1:
        raise DataError(root, f"image_shape must be [channels, height, width] with 1 or 3 channels, got {image_shape}")
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    split = _split_layout(root, log)
    base = root / "train" if split else root
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(base, f"needs one sub-folder per class (at least 2), found {len(classes)}")
    X, y, skipped = _read_tree(base, classes, image_shape, log)
    rng = np.random.default_rng(seed)
    if split:
        extra = sorted(d.name for d in (root / "test").iterdir() if d.is_dir() and d.name not in classes)
        if extra:
            raise DataError(root / "test" / extra[0], "class folder not in train/")
        test_classes = [c for c in classes if (root / "test" / c).is_dir()]
        Xt, yt, skipped_t = _read_tree(root / "test", test_classes, image_shape, log)
        yt = np.array([classes.index(test_classes[i]) for i in yt], np.int64)
        skipped += skipped_t
    else:
        held = []
        for c in range(len(classes)):
            idx = np.flatnonzero(y == c)
            k = round(test_fraction * len(idx))
            held.append(rng.choice(idx, min(k, len(idx) - 1), replace=False) if k else idx[:0])
        held = np.sort(np.concatenate(held))
        if len(held) == 0:
            raise DataError(root, f"too few images to hold out a test set ({len(y)} readable images)")
        keep = np.ones(len(y), bool)
        keep[held] = False
        Xt, yt = X[held], y[held]
        X, y = X[keep], y[keep]
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    note = f", {skipped} unreadable files skipped" if skipped else ""
    source = f"{root} (image folder: {len(y)} train and {len(yt)} test images, {len(classes)} classes{note})"
    names = tuple(class_name(c) for c in classes)
    return RawData({"train": (X, y), "test": (Xt, yt)}, source, "images", len(classes), names, image_shape)
