"""Cross-fitting: fit on some canary folds, score the others.

Supervised attacks use :func:`cross_fit` so that no canary's score depends on its own
membership label (docs/architecture.md, "Conventions"). Folds are stratified by label, so every
training split holds the same share of members and the split itself carries no label
information about the held-out fold.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import numpy as np

Model = TypeVar("Model")


def stratified_folds(is_member: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (``0..n_folds-1``) per canary, shape ``[N]``, balanced within each class.

    Raises:
        ValueError: if a class has fewer canaries than ``n_folds`` (a fold would lack it).
    """
    is_member = np.asarray(is_member, dtype=bool)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2 for cross-fitting, got {n_folds}")
    for label, count in ((True, int(is_member.sum())), (False, int((~is_member).sum()))):
        if count < n_folds:
            kind = "members" if label else "non-members"
            raise ValueError(
                f"cross-fitting with {n_folds} folds needs at least {n_folds} {kind}, got {count}; "
                "use more canaries or fewer folds"
            )
    rng = np.random.default_rng(seed)
    folds = np.empty(len(is_member), dtype=np.int64)
    for label in (True, False):
        idx = np.flatnonzero(is_member == label)
        idx = idx[rng.permutation(len(idx))]
        folds[idx] = np.arange(len(idx)) % n_folds
    return folds


def cross_fit(
    is_member: np.ndarray,
    fit: Callable[[np.ndarray], Model],
    score: Callable[[Model, np.ndarray], np.ndarray],
    *,
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Scores ``[N]`` where each canary is scored by a model fitted without its fold.

    Args:
        is_member: bool ``[N]`` membership labels.
        fit: ``fit(train_index) -> model``; ``train_index`` are integer canary indices
            whose labels the model may use.
        score: ``score(model, test_index) -> [len(test_index)]`` scores, higher = member.
    """
    is_member = np.asarray(is_member, dtype=bool)
    folds = stratified_folds(is_member, n_folds, seed)
    scores = np.empty(len(is_member), dtype=np.float64)
    for fold in range(n_folds):
        test = np.flatnonzero(folds == fold)
        train = np.flatnonzero(folds != fold)
        scores[test] = score(fit(train), test)
    return scores
