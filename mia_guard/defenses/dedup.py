"""Training-data deduplication: exact and near-duplicate removal.

Memorization grows with the number of times a sequence is seen, so removing repeated
copies is a defense in its own right (and the canary repetition count ``r`` of an audit
is what dedup collapses).

Two passes over the items in order, keeping the first occurrence:

- **exact**: items whose normalised form is identical (texts: Unicode NFKC, casefold,
  runs of whitespace collapsed to one space, stripped; token sequences: as given).
- **near** (``near_threshold`` not ``None``): items whose set of ``ngram``-shingles
  (character n-grams of the normalised text, or token n-grams) has an estimated
  Jaccard similarity ``>= near_threshold`` with an already kept item. Candidates come
  from MinHash LSH (`datasketch <https://ekzhu.com/datasketch/>`_; install with
  ``pip install mia-guard[dedup]``) and are confirmed with the MinHash Jaccard
  estimate, whose standard error with ``num_perm=128`` is about
  ``sqrt(J(1-J)/128)`` (0.035 at J = 0.8): pairs right at the threshold go either way.

An item is compared with kept items only, so a chain a ~ b ~ c with a !~ c keeps a and c.
Items shorter than ``ngram`` are one shingle (the whole item).

Each changed character touches up to ``ngram`` character shingles, so ``c`` edits in
a text of ``L`` characters leave a Jaccard of about ``(L-n+1-cn)/(L-n+1+cn)``: three
edits in 200 characters with n = 5 give 0.86, a near duplicate at 0.8.

Templated canaries share everything but their secret: if the template is long compared
with the secret, *different* canaries are near duplicates of each other and near
dedup keeps only one of them. Check ``DedupResult.removed`` before training on it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Removal:
    """One removed item: ``index`` duplicates the kept item ``duplicate_of``.

    ``kind`` is ``"exact"`` or ``"near"``; ``similarity`` is 1.0 for exact duplicates and
    the MinHash estimate of the shingle Jaccard similarity for near ones.
    """

    index: int
    duplicate_of: int
    kind: str
    similarity: float


@dataclass
class DedupResult:
    """Result of :func:`deduplicate`.

    Attributes:
        kept_texts: the kept items, in their original order (same objects as given).
        kept_index: their positions in the input.
        removed: one :class:`Removal` per removed item, in input order.
        n_input: number of input items.
        near_threshold, ngram, num_perm, seed: the settings used.
    """

    kept_texts: list
    kept_index: list[int]
    removed: list[Removal]
    n_input: int
    near_threshold: float | None
    ngram: int
    num_perm: int
    seed: int

    @property
    def n_exact(self) -> int:
        return sum(r.kind == "exact" for r in self.removed)

    @property
    def n_near(self) -> int:
        return sum(r.kind == "near" for r in self.removed)

    def summary(self) -> str:
        """One line, e.g. ``kept 95 of 100 items; removed 3 exact and 2 near duplicates (...)``."""
        near = ("near duplicates disabled" if self.near_threshold is None else
                f"near = estimated {self.ngram}-gram Jaccard >= {self.near_threshold}, {self.num_perm} permutations")
        return (f"kept {len(self.kept_index)} of {self.n_input} items; removed {self.n_exact} exact and "
                f"{self.n_near} near duplicates ({near})")

    def to_dict(self) -> dict:
        """JSON-ready dict (the kept items themselves are left out)."""
        return {
            "n_input": self.n_input,
            "kept_index": list(self.kept_index),
            "removed": [asdict(r) for r in self.removed],
            "near_threshold": self.near_threshold,
            "ngram": self.ngram,
            "num_perm": self.num_perm,
            "seed": self.seed,
        }


def normalize_text(text: str) -> str:
    """NFKC, casefold, collapse whitespace runs to one space, strip."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _as_items(items: Sequence[Any]) -> tuple[str, list]:
    """``("text", [normalised str])`` or ``("tokens", [int64 array])``."""
    if isinstance(items, (str, bytes)):
        raise TypeError("deduplicate expects a list of texts or of token-id sequences, got a single string")
    items = list(items)
    if not items:
        return "text", []
    if all(isinstance(x, str) for x in items):
        return "text", [normalize_text(x) for x in items]
    if any(isinstance(x, (str, bytes)) for x in items):
        raise TypeError("deduplicate got a mix of strings and other items; pass only texts or only token-id sequences")
    arrays = []
    for i, x in enumerate(items):
        if hasattr(x, "detach"):  # torch tensor
            x = x.detach().cpu().numpy()
        arr = np.asarray(x)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise TypeError(f"item {i} is not a 1-D sequence of token ids (got dtype {arr.dtype}, shape {arr.shape})")
        arrays.append(arr.astype(np.int64))
    return "tokens", arrays


def _exact_key(kind: str, item: Any) -> bytes:
    data = item.encode("utf-8") if kind == "text" else item.tobytes()
    return hashlib.sha256(data).digest()


def _shingles(kind: str, item: Any, n: int) -> list[bytes]:
    """Distinct n-grams of an item as bytes; an item shorter than ``n`` is one shingle."""
    if kind == "text":
        if len(item) < n:
            return [item.encode("utf-8")]
        return list({item[i : i + n].encode("utf-8") for i in range(len(item) - n + 1)})
    if len(item) < n:
        return [item.tobytes()]
    return list({w.tobytes() for w in np.lib.stride_tricks.sliding_window_view(item, n)})


def _import_datasketch() -> Any:
    try:
        import datasketch
    except ImportError as err:
        raise ImportError(
            "near-duplicate detection needs the 'datasketch' package: pip install mia-guard[dedup] "
            "(or pip install datasketch); pass near_threshold=None for exact deduplication only"
        ) from err
    return datasketch


def deduplicate(
    texts: Sequence[str] | Sequence[Sequence[int]],
    near_threshold: float | None = 0.8,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 0,
) -> DedupResult:
    """Remove exact and near-duplicate items, keeping each first occurrence.

    Args:
        texts: a list of strings, or a list of token-id sequences (lists, tuples,
            numpy arrays or 1-D tensors of ints).
        near_threshold: estimated Jaccard similarity of ``ngram``-shingle sets at or
            above which an item is a near duplicate; ``None`` = exact dedup only (no
            ``datasketch`` needed).
        ngram: shingle length in characters (texts) or tokens (token sequences).
        num_perm: MinHash permutations; more = a sharper threshold, slower.
        seed: MinHash seed, for reproducible results.

    Returns:
        a :class:`DedupResult`; ``kept_texts`` holds the given objects, unchanged.
    """
    if near_threshold is not None and not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must lie in (0, 1] or be None, got {near_threshold!r}")
    if isinstance(ngram, bool) or not isinstance(ngram, int) or ngram < 1:
        raise ValueError(f"ngram must be a positive integer, got {ngram!r}")
    if isinstance(num_perm, bool) or not isinstance(num_perm, int) or num_perm < 16:
        raise ValueError(f"num_perm must be an integer >= 16, got {num_perm!r}")
    kind, items = _as_items(texts)
    originals = list(texts)

    first_by_key: dict[bytes, int] = {}
    removed: list[Removal] = []
    survivors: list[int] = []
    for i, item in enumerate(items):
        key = _exact_key(kind, item)
        if key in first_by_key:
            removed.append(Removal(i, first_by_key[key], "exact", 1.0))
        else:
            first_by_key[key] = i
            survivors.append(i)

    kept = survivors
    if near_threshold is not None and survivors:
        datasketch = _import_datasketch()
        sketches = datasketch.MinHash.bulk(
            (_shingles(kind, items[i], ngram) for i in survivors), num_perm=num_perm, seed=seed
        )
        try:
            lsh = datasketch.MinHashLSH(threshold=near_threshold, num_perm=num_perm)
        except ValueError as err:  # thresholds near 1 leave LSH fewer than two bands
            raise ValueError(
                f"near_threshold={near_threshold} is too close to 1 for MinHash LSH ({err}); use a threshold "
                "<= 0.98, or near_threshold=None to remove exact duplicates only"
            ) from err
        sketch_of = dict(zip(survivors, sketches))
        kept = []
        for i, sketch in zip(survivors, sketches):
            best, best_sim = None, -1.0
            for j in lsh.query(sketch):
                sim = float(sketch.jaccard(sketch_of[j]))
                if sim >= near_threshold and (sim > best_sim or (sim == best_sim and j < best)):
                    best, best_sim = j, sim
            if best is None:
                lsh.insert(i, sketch)
                kept.append(i)
            else:
                removed.append(Removal(i, best, "near", best_sim))
        removed.sort(key=lambda r: r.index)

    return DedupResult(
        kept_texts=[originals[i] for i in kept],
        kept_index=kept,
        removed=removed,
        n_input=len(items),
        near_threshold=near_threshold,
        ngram=ngram,
        num_perm=num_perm,
        seed=seed,
    )
