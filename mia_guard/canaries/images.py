"""Image canaries for autoregressive image generators.

An autoregressive image model (ImageGPT-style, or a GPT-2 over pixel tokens) reads an
image as a sequence of discrete tokens. Here each pixel value is quantized to one of
``levels`` grey levels and the image is read in raster order (row by row; channels of
a pixel next to each other for ``[N, H, W, C]`` arrays):

- token ``k`` (``0 <= k < levels``) is grey level ``k``;
- with ``bos=True`` every sequence starts with a BOS token ``levels``, so the first pixel
  is predicted from BOS and every pixel is scored (the scorer never scores the first
  token of a sequence); the vocabulary then has ``levels + 1`` tokens.

Level ``k`` covers values ``[lo + k*w, lo + (k+1)*w)`` of ``value_range = (lo, hi)``
with ``w = (hi - lo) / levels`` (``hi`` itself is in the top level); decoding returns the
bin centres, so quantize -> decode -> quantize is the identity on levels.

Scoring needs nothing image-specific: :func:`~mia_guard.scoring.forward.score_tokens` works on
token canaries without a tokenizer. The figures image-model people read (bits per
dimension, a per-pixel map) are the analysis ``"image"`` in :mod:`mia_guard.analyses.images`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np



@dataclass(frozen=True)
class ImageVocab:
    """Token ids of quantized images: grey levels ``0..levels-1``, then BOS (``levels``) if ``bos``."""

    levels: int = 16
    bos: bool = True

    def __post_init__(self) -> None:
        _check_levels(self.levels)

    @property
    def vocab_size(self) -> int:
        """Number of token ids a model needs (its embedding/output size)."""
        return int(self.levels) + int(self.bos)

    @property
    def bos_id(self) -> int | None:
        return int(self.levels) if self.bos else None

    def encode(self, quantized: np.ndarray) -> list[list[int]]:
        """Token sequences from quantized images ``[N, ...]`` (raster order, BOS first if ``bos``)."""
        flat = np.asarray(quantized).reshape(len(quantized), -1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.levels):
            raise ValueError(
                f"quantized pixel values must be in [0, {self.levels - 1}], got [{flat.min()}, {flat.max()}]"
            )
        prefix = [self.bos_id] if self.bos else []
        return [prefix + row.tolist() for row in flat.astype(np.int64)]

    def decode(self, tokens: Sequence[Sequence[int]], shape: Sequence[int]) -> np.ndarray:
        """Quantized images ``[N, *shape]`` (int64 levels) from token sequences made by :meth:`encode`."""
        size = int(np.prod(shape))
        out = np.empty((len(tokens), size), dtype=np.int64)
        for i, seq in enumerate(tokens):
            seq = [int(t) for t in seq]
            if self.bos:
                if not seq or seq[0] != self.bos_id:
                    raise ValueError(
                        f"sequence {i} does not start with the BOS token {self.bos_id}; pass bos=False if it has none"
                    )
                seq = seq[1:]
            if len(seq) != size:
                raise ValueError(
                    f"sequence {i} has {len(seq)} pixel tokens, an image of shape {tuple(shape)} needs {size}"
                )
            pixels = np.asarray(seq, dtype=np.int64)
            if pixels.min() < 0 or pixels.max() >= self.levels:
                raise ValueError(
                    f"sequence {i} holds token ids outside the {self.levels} grey levels (BOS inside the image, or a "
                    "different vocabulary)"
                )
            out[i] = pixels
        return out.reshape(len(tokens), *shape)


# ---------------------------------------------------------------------------- quantization
def _check_levels(levels: int) -> None:
    if not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    return lo, hi


def _resolve_range(images: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    if value_range is not None:
        return _check_range(value_range)
    if images.dtype == np.uint8:
        return 0.0, 255.0
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(
            f"images hold values in [{images.min()}, {images.max()}], not uint8 or [0, 1]; "
            "pass value_range=(low, high), e.g. (0, 16) for scikit-learn's digits"
        )
    return 0.0, 1.0


def quantize_images(
    images: np.ndarray, levels: int = 16, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Grey levels ``0..levels-1`` (int64, same shape as ``images``) of pixel values.

    Args:
        images: ``[N, H, W]`` or ``[N, H, W, C]`` numbers.
        levels: number of grey levels.
        value_range: ``(low, high)`` of the pixel scale; default ``(0, 255)`` for uint8 and
            ``(0, 1)`` otherwise. Training images and canaries must share it.

    Raises:
        ValueError: values outside ``value_range`` or not finite.
    """
    _check_levels(levels)
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"images must be an array [N, H, W] or [N, H, W, C], got shape {images.shape}")
    lo, hi = _resolve_range(images, value_range)
    values = images.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("images contain NaN or infinite pixel values")
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"pixel values [{values.min()}, {values.max()}] fall outside value_range ({lo}, {hi})")
    return np.clip(np.floor((values - lo) / (hi - lo) * levels), 0, levels - 1).astype(np.int64)


def dequantize_images(
    quantized: np.ndarray, levels: int = 16, value_range: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Bin centres (float64) of grey levels: ``low + (k + 0.5) * (high - low) / levels``."""
    _check_levels(levels)
    lo, hi = _check_range(value_range)
    return lo + (np.asarray(quantized, dtype=np.float64) + 0.5) * (hi - lo) / levels


def images_to_tokens(
    images: np.ndarray, levels: int = 16, value_range: tuple[float, float] | None = None, bos: bool = True
) -> list[list[int]]:
    """Token sequences of ``images`` (quantize, raster order, BOS first if ``bos``)."""
    return ImageVocab(levels, bos).encode(quantize_images(images, levels, value_range))


def tokens_to_images(
    tokens: Sequence[Sequence[int]],
    shape: Sequence[int],
    levels: int = 16,
    value_range: tuple[float, float] | None = None,
    bos: bool = True,
) -> np.ndarray:
    """Images ``[N, *shape]`` from token sequences: int64 grey levels, or bin-centre values
    on ``value_range`` when it is given."""
    quantized = ImageVocab(levels, bos).decode(tokens, shape)
    return quantized if value_range is None else dequantize_images(quantized, levels, value_range)


def distinct_image_tokens(
    images: np.ndarray,
    levels: int = 16,
    value_range: tuple[float, float] | None = None,
    bos: bool = True,
) -> list[list[int]]:
    """:func:`images_to_tokens`, refusing images that quantize to the same tokens (their
    membership would be ambiguous); what :meth:`CanarySet.from_images` builds canaries of."""
    sequences = images_to_tokens(images, levels, value_range, bos)
    first_seen: dict[tuple[int, ...], int] = {}
    for i, seq in enumerate(sequences):
        j = first_seen.setdefault(tuple(seq), i)
        if j != i:
            raise ValueError(
                f"images {j} and {i} quantize to the same tokens at {levels} levels, so the membership of one is the "
                "other's; drop duplicates (e.g. keep np.unique rows of the quantized images) or use more levels"
            )
    return sequences
