"""Data augmentation of a mini-batch of raw images, vectorized over the batch and seeded.

The trainer gathers a mini-batch of raw rows (``uint8`` pixels), augments it with an
:class:`Augmenter` and only then standardizes it, so every transform works on real images (a
flipped image is standardized with the statistics of its new pixel positions). A row of
``C * H * W`` values is one image in channel-major order (CIFAR-10: 1024 red, 1024 green, 1024
blue, each 32 x 32 row-major). Networks trained in lockstep share the augmented batch.

Transforms, in order (each off by default):

- ``flip``: mirror left-right with probability 1/2;
- ``translate = T``: shift by ``(dy, dx)`` drawn uniformly from ``{-T, ..., T}^2``, filling the
  uncovered border by ``padding``: ``"zero"`` (black, as torchvision's ``RandomCrop(padding=T)``),
  ``"reflect"`` (mirror without repeating the edge) or ``"edge"`` (repeat the edge pixel);
- ``crop_scale = s < 1``: random resized crop: a square of a uniformly drawn fraction ``a`` of the
  area, ``s <= a <= 1``, at a random position, resized back by nearest-neighbour sampling;
- ``jitter = j > 0``: colour jitter: brightness, contrast and saturation factors drawn uniformly
  from ``[1 - j, 1 + j]`` per image (the result is float, clipped to ``[0, 255]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Augmenter", "check_translate", "flip", "translate", "resized_crop", "colour_jitter"]

_PAD_MODES = {"zero": "constant", "reflect": "reflect", "edge": "edge"}


def flip(images: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Mirror ``images[which]`` left-right, in place. ``images: (B, C, H, W)``; ``which: (B,) bool``."""
    images[which] = images[which][..., ::-1]
    return images


def translate(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, T: int, padding: str = "zero") -> np.ndarray:
    """Shift image ``b`` by ``(dy[b], dx[b])`` pixels (``|dy|, |dx| <= T``), filling by ``padding``.

    Returns a new ``(B, C, H, W)`` array: pixel ``(i, j)`` of the result is pixel
    ``(i - dy, j - dx)`` of the input (a positive ``dx`` moves the content right).
    """
    B, C, H, W = images.shape
    if padding == "zero":  # what np.pad does, at half the cost of its general machinery
        padded = np.zeros((B, C, H + 2 * T, W + 2 * T), images.dtype)
        padded[:, :, T : T + H, T : T + W] = images
    else:
        padded = np.pad(images, ((0, 0), (0, 0), (T, T), (T, T)), mode=_PAD_MODES[padding])
    windows = sliding_window_view(padded, (H, W), axis=(2, 3))  # (B, C, 2T+1, 2T+1, H, W)
    b = np.arange(B)
    return windows[b, :, T - dy, T - dx]


def resized_crop(images: np.ndarray, area: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square crop of fraction ``area[b]`` of each image at a random position, resized back to
    ``(H, W)`` by nearest-neighbour sampling. Returns a new ``(B, C, H, W)`` array."""
    B, C, H, W = images.shape
    side = np.sqrt(area)
    h = np.maximum(1, np.round(side * H)).astype(np.int64)
    w = np.maximum(1, np.round(side * W)).astype(np.int64)
    top = (rng.random(B) * (H - h + 1)).astype(np.int64)
    left = (rng.random(B) * (W - w + 1)).astype(np.int64)
    rows = top[:, None] + (np.arange(H)[None, :] * h[:, None]) // H  # (B, H)
    cols = left[:, None] + (np.arange(W)[None, :] * w[:, None]) // W  # (B, W)
    b = np.arange(B)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    return images[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def colour_jitter(images: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation factors in ``[1 - strength, 1 + strength]`` per image.

    Returns float32 ``(B, C, H, W)`` in ``[0, 255]``: brightness scales every pixel, contrast
    moves pixels from the image's mean grey, saturation from each pixel's grey (channel mean).
    """
    B = len(images)
    x = images.astype(np.float32)
    f = rng.uniform(1 - strength, 1 + strength, (3, B, 1, 1, 1)).astype(np.float32)
    x *= f[0]
    grey_mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x -= grey_mean
    x *= f[1]
    x += grey_mean
    grey = x.mean(axis=1, keepdims=True)
    x -= grey
    x *= f[2]
    x += grey
    return np.clip(x, 0, 255, out=x)


def check_translate(T: int, image_shape) -> None:
    """ValueError unless a shift of up to ``T`` pixels keeps part of every image of
    ``image_shape = (C, H, W)`` in the picture: ``T`` must be below ``H`` and ``W``."""
    C, H, W = image_shape
    if T >= min(H, W):
        raise ValueError(
            f"`translate` = {T} must be below the images' height and width (the data's images are {C}x{H}x{W}, "
            f"channels x height x width): a shift of {min(H, W)} pixels or more moves the whole image out"
        )


@dataclass(frozen=True)
class Augmenter:
    """The transforms of an experiment's ``[augment]`` table, for images of ``image_shape``.

    Call it on a batch of raw rows ``X: (B, C*H*W)`` with a Generator; it returns the augmented
    batch as rows of the same shape (``uint8`` kept unless colour jitter makes it float32).
    """

    image_shape: tuple[int, int, int]
    flip: bool = False
    translate: int = 0
    padding: str = "zero"
    crop_scale: float = 1.0
    jitter: float = 0.0

    @classmethod
    def from_config(cls, augment_config, image_shape) -> Augmenter | None:
        """An Augmenter for an ``[augment]`` config, or None when every transform is off."""
        a = augment_config
        if not (a.flip or a.translate or a.crop_scale < 1 or a.jitter):
            return None
        if image_shape is None:
            raise ValueError("augmentation needs image data (the data set has no image shape)")
        check_translate(a.translate, image_shape)
        return cls(tuple(image_shape), a.flip, a.translate, a.padding, a.crop_scale, a.jitter)

    def __call__(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        B = len(X)
        images = X.reshape(B, *self.image_shape)
        if self.flip:
            images = flip(images.copy(), rng.random(B) < 0.5)
        if self.translate:
            T = self.translate
            d = rng.integers(-T, T + 1, (2, B))
            images = translate(images, d[0], d[1], T, self.padding)
        if self.crop_scale < 1:
            images = resized_crop(images, rng.uniform(self.crop_scale, 1.0, B), rng)
        if self.jitter:
            images = colour_jitter(images, self.jitter, rng)
        return np.ascontiguousarray(images).reshape(B, -1)
