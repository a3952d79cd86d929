"""Learned attacks: classifiers on per-canary features, cross-fitted or trained on shadow runs.

A classifier reads the feature vector of each canary (:mod:`mia_guard.attacks.features`:
summaries of NLL, confidence, entropy, top-1 hits, Min-K%/Min-K%++, zlib and, where a
reference model exists, their reference-calibrated versions) and outputs the log-odds
of membership, higher = member. Two ways to get labelled training canaries:

- **Cross-fitted, in one run** (``classifier_logreg``, ``classifier_mlp``): the
  classifier is fitted on the canaries of some folds and scores the others
  (:func:`mia_guard.attacks.crossfit.cross_fit`), so no canary's score depends on its
  own label. Canaries of a template are exchangeable, which is what makes one run's
  canaries a valid training set for the classifier.
- **Shadow mode** (:func:`shadow_scores`, attack ``shadow_classifier``): the classifier
  is fitted on the canaries of one or more *earlier runs* whose membership is known
  (their saved :class:`~mia_guard.audit.result.AuditHistory` files, i.e. shadow models
  in the sense of Shokri et al. 2017), and scores the target run's canaries without
  reading their labels. The shadow runs should be trained like the target (same
  architecture, data, canary template, steps), each with its own random split.

Models (``model=``): ``"logreg"`` — L2 logistic regression on standardised features
(Newton solver); ``"mlp"`` — one hidden tanh layer with an L2 penalty, trained with
Adam on mini-batches of 64 until the loss stops improving (seeded, so reproducible).
Missing feature values (non-finite statistics in a reference run) are imputed with
the training canaries' median.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..scoring.token_stats import TokenStats
from .crossfit import cross_fit
from .features import CanaryFeatures, canary_features
from .registry import AttackContext, register

MODELS = ("logreg", "mlp")
MLP_BATCH = 64
_ACTIVATIONS = {
    "identity": lambda x: x,
    "logistic": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
}


# ---------------------------------------------------------------------- classifiers
def make_classifier(model: str = "logreg", *, seed: int = 0, **params: Any) -> Any:
    """An unfitted scikit-learn pipeline: median imputation, standardisation, classifier.

    Args:
        model: ``"logreg"`` (params: ``C``, the inverse L2 strength, default 0.01) or
            ``"mlp"`` (params: ``hidden``, hidden-layer widths, default ``(32,)``;
            ``alpha``, the L2 penalty, default 5; ``learning_rate`` and ``max_iter``
            (epochs) of Adam, defaults 0.01 and 300). The strong default penalties
            keep a few hundred training canaries from fitting noise in the ~30
            features: with weak leakage (AUC ~0.66) they gained 0.02-0.05 AUC over
            C=1 / alpha=1, with strong leakage they cost nothing (docs/learned_attacks.md).
        seed: the MLP's initialisation and mini-batch seed.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "logreg":
        allowed = {"C"}
        clf = LogisticRegression(C=float(params.get("C", 0.01)), solver="newton-cholesky", max_iter=1000)
    elif model == "mlp":
        allowed = {"hidden", "alpha", "learning_rate", "max_iter"}
        hidden = params.get("hidden", (32,))
        hidden = (int(hidden),) if np.isscalar(hidden) else tuple(int(h) for h in hidden)
        clf = MLPClassifier(
            hidden_layer_sizes=hidden,
            activation="tanh",
            alpha=float(params.get("alpha", 5.0)),
            solver="adam",
            learning_rate_init=float(params.get("learning_rate", 1e-2)),
            batch_size=MLP_BATCH,
            max_iter=int(params.get("max_iter", 300)),
            random_state=seed,
        )
    else:
        raise ValueError(f"unknown classifier model {model!r}; choose one of {', '.join(MODELS)}")
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"unknown parameters {sorted(unknown)} for the {model!r} classifier; allowed: {sorted(allowed)}"
        )
    impute = SimpleImputer(strategy="median", keep_empty_features=True)
    return Pipeline([("impute", impute), ("scale", StandardScaler()), ("clf", clf)])


def fit_classifier(pipeline: Any, features: np.ndarray, is_member: np.ndarray) -> Any:
    """Fit ``pipeline`` on ``features`` ``[n, F]`` and bool labels ``[n]`` (both classes needed)."""
    is_member = np.asarray(is_member, dtype=bool)
    if is_member.all() or not is_member.any():
        raise ValueError("the classifier's training canaries hold only one class; it needs members and non-members")
    if "clf__batch_size" in pipeline.get_params():
        pipeline.set_params(clf__batch_size=min(MLP_BATCH, len(is_member)))
    return pipeline.fit(_finite_or_nan(features), is_member)


def membership_log_odds(pipeline: Any, features: np.ndarray) -> np.ndarray:
    """The fitted classifier's log-odds of membership per row, ``[n]``, higher = member.

    Computed from the model's pre-sigmoid output (not from rounded probabilities), so
    confident scores stay ranked instead of tying at probability 1.
    """
    transformed = pipeline[:-1].transform(_finite_or_nan(features))
    clf = pipeline[-1]
    if not bool(clf.classes_[1]):
        raise RuntimeError("classifier classes are not [False, True]; cannot orient its output")
    if hasattr(clf, "decision_function"):
        return np.asarray(clf.decision_function(transformed), dtype=np.float64)
    activation = _ACTIVATIONS[clf.activation]
    hidden = transformed
    for weights, bias in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        hidden = activation(hidden @ weights + bias)
    logits = hidden @ clf.coefs_[-1] + clf.intercepts_[-1]
    return np.asarray(logits[:, 0], dtype=np.float64)


def _finite_or_nan(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return np.where(np.isfinite(features), features, np.nan)


def cross_fitted_scores(
    features: np.ndarray,
    is_member: np.ndarray,
    *,
    model: str = "logreg",
    n_folds: int = 5,
    seed: int = 0,
    **params: Any,
) -> np.ndarray:
    """Cross-fitted classifier log-odds ``[N]``: each canary scored by a fit without its fold."""
    features = np.asarray(features, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    make_classifier(model, seed=seed, **params)  # validate the model and params before fitting
    return cross_fit(
        is_member,
        lambda train: fit_classifier(make_classifier(model, seed=seed, **params), features[train], is_member[train]),
        lambda pipeline, test: membership_log_odds(pipeline, features[test]),
        n_folds=n_folds,
        seed=seed,
    )


def _context_features(ctx: AttackContext, k: float) -> CanaryFeatures:
    return canary_features(ctx.stats, texts=ctx.texts, reference=_usable_reference(ctx.stats, ctx.reference), k=k)


def _usable_reference(stats: TokenStats, reference: TokenStats | None) -> TokenStats | None:
    """``reference`` unless it is ``stats`` itself (the first audit of a run is its own reference)."""
    if reference is None or (reference.mask.shape == stats.mask.shape and torch.equal(reference.nll, stats.nll)):
        return None
    return reference


@register("classifier_logreg", supervised=True)
def classifier_logreg(ctx: AttackContext, C: float = 0.01, k: float = 0.2) -> np.ndarray:
    """Logistic regression on per-canary token-statistic features, cross-fitted over canary folds."""
    features = _context_features(ctx, k)
    return cross_fitted_scores(features.values, ctx.is_member, model="logreg", n_folds=ctx.n_folds, seed=ctx.seed, C=C)


@register("classifier_mlp", supervised=True)
def classifier_mlp(
    ctx: AttackContext, hidden: Sequence[int] | int = (32,), alpha: float = 5.0, k: float = 0.2
) -> np.ndarray:
    """Small MLP on per-canary token-statistic features, cross-fitted over canary folds."""
    features = _context_features(ctx, k)
    return cross_fitted_scores(
        features.values, ctx.is_member, model="mlp", n_folds=ctx.n_folds, seed=ctx.seed, hidden=hidden, alpha=alpha
    )


# ---------------------------------------------------------------------- shadow mode
@dataclass(frozen=True)
class ShadowRun:
    """One earlier run with known membership, as the shadow classifier reads it.

    Attributes:
        stats: TokenStats of its canaries at the chosen audit.
        is_member: bool ``[N]``, its canaries' membership.
        reference: its first audit's TokenStats (the run's reference), or ``None`` when
            the chosen audit is its first.
        all_stats: TokenStats of every audit of the run (to recognise the target run).
        source: where it came from (a path), for messages.
        step: the training step of the chosen audit.
    """

    stats: TokenStats
    is_member: np.ndarray
    reference: TokenStats | None
    all_stats: tuple[TokenStats, ...]
    source: str
    step: int

    @classmethod
    def from_audits(
        cls,
        stats: Sequence[TokenStats],
        is_member: np.ndarray,
        steps: Sequence[int],
        *,
        source: str = "in-memory run",
        step: int | None = None,
    ) -> "ShadowRun":
        """A shadow run from its audits' TokenStats (oldest first) and membership.

        ``step`` picks the audit to train on (default: the last); the first audit is the
        run's reference unless it is the one picked.
        """
        if len(stats) == 0 or len(stats) != len(steps):
            raise ValueError(f"{source}: need one training step per audit, got {len(stats)} audits, {len(steps)} steps")
        if step is None:
            chosen = len(stats) - 1
        else:
            matches = [i for i, s in enumerate(steps) if s == step]
            if not matches:
                raise ValueError(f"{source} has no audit at step {step}; its audits are at steps {list(steps)}")
            chosen = matches[-1]
        is_member = np.asarray(is_member, dtype=bool)
        if is_member.shape != (stats[chosen].num_canaries,):
            raise ValueError(
                f"{source}: membership covers {len(is_member)} canaries but the statistics {stats[chosen].num_canaries}"
            )
        return cls(
            stats=stats[chosen],
            is_member=is_member,
            reference=stats[0] if chosen > 0 else None,
            all_stats=tuple(stats),
            source=source,
            step=int(steps[chosen]),
        )


def load_shadow_runs(paths: Sequence[str | os.PathLike], step: int | None = None) -> list[ShadowRun]:
    """Read shadow runs from saved AuditHistory JSON files.

    Args:
        paths: one file per earlier run (written by ``AuditHistory.save`` with statistics).
        step: the audit to train on (its training step); ``None`` takes each run's last audit.
    """
    from ..audit.result import AuditHistory

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("shadow mode needs at least one AuditHistory file of an earlier run with known membership")
    runs = []
    for path in paths:
        history = AuditHistory.load(path)
        audited = [r for r in history.results if r.stats is not None]
        if not audited:
            raise ValueError(
                f"{path} holds no token statistics; save the shadow run's history with include_stats=True"
            )
        stats, steps = [r.stats for r in audited], [r.step for r in audited]
        runs.append(ShadowRun.from_audits(stats, history.is_member, steps, source=str(Path(path)), step=step))
    return runs


@dataclass(frozen=True)
class ShadowClassifier:
    """A classifier fitted on shadow runs, with the feature names it expects."""

    pipeline: Any
    feature_names: tuple[str, ...]
    uses_reference: bool

    def score(self, stats: TokenStats, reference: TokenStats | None = None, k: float = 0.2) -> np.ndarray:
        """Log-odds of membership of ``stats``' canaries, ``[N]``, higher = member."""
        if self.uses_reference and reference is None:
            raise ValueError("this shadow classifier was fitted with reference features; pass the target's reference")
        features = canary_features(stats, reference=reference if self.uses_reference else None, k=k)
        if features.names != self.feature_names:
            raise ValueError(f"feature mismatch: fitted on {self.feature_names}, got {features.names}")
        return membership_log_odds(self.pipeline, features.values)


def fit_shadow_classifier(
    runs: Sequence[ShadowRun],
    *,
    model: str = "logreg",
    use_reference: bool = False,
    k: float = 0.2,
    seed: int = 0,
    **params: Any,
) -> ShadowClassifier:
    """Fit a classifier on the canaries of ``runs`` (pooled), with their known labels.

    Text features (zlib) are never used: an AuditHistory does not hold the canary texts.
    ``use_reference`` adds the reference-calibrated features; every run then needs a
    reference (an audit before the chosen one).
    """
    if not runs:
        raise ValueError("fit_shadow_classifier needs at least one shadow run")
    if use_reference:
        lacking = [r.source for r in runs if r.reference is None]
        if lacking:
            raise ValueError(f"shadow runs {lacking} have no earlier audit to serve as reference; use_reference=False")
    blocks = [canary_features(r.stats, reference=r.reference if use_reference else None, k=k) for r in runs]
    pipeline = fit_classifier(
        make_classifier(model, seed=seed, **params),
        np.vstack([b.values for b in blocks]),
        np.concatenate([r.is_member for r in runs]),
    )
    return ShadowClassifier(pipeline, blocks[0].names, use_reference)


def shadow_scores(
    stats: TokenStats,
    shadow: Sequence[ShadowRun] | Sequence[str | os.PathLike],
    *,
    reference: TokenStats | None = None,
    history: Sequence[TokenStats] = (),
    model: str = "logreg",
    shadow_step: int | None = None,
    k: float = 0.2,
    seed: int = 0,
    **params: Any,
) -> np.ndarray:
    """Score the target run's canaries with a classifier fitted on shadow runs, ``[N]``, higher = member.

    Args:
        stats: the target run's TokenStats.
        shadow: shadow runs, or paths of their AuditHistory JSON files.
        reference: the target run's reference statistics; reference features are used
            when it is given (and is not ``stats`` itself) and every shadow run has one.
        history: the target run's earlier TokenStats; a shadow run holding any of them
            (or ``stats``) is the target run itself, and is refused.
        model, k, seed, params: see :func:`make_classifier` and :func:`canary_features`.
    """
    shadow = [shadow] if isinstance(shadow, (str, os.PathLike)) else list(shadow)
    if shadow and all(isinstance(run, ShadowRun) for run in shadow):
        runs = shadow
    else:
        runs = load_shadow_runs(shadow, shadow_step)
    _refuse_target_run(runs, [stats, *history])
    reference = _usable_reference(stats, reference)
    use_reference = reference is not None and all(r.reference is not None for r in runs)
    classifier = fit_shadow_classifier(runs, model=model, use_reference=use_reference, k=k, seed=seed, **params)
    return classifier.score(stats, reference if use_reference else None, k=k)


def _refuse_target_run(runs: Sequence[ShadowRun], target: Sequence[TokenStats]) -> None:
    for run in runs:
        for theirs in run.all_stats:
            for ours in target:
                if theirs.mask.shape == ours.mask.shape and torch.equal(theirs.nll, ours.nll):
                    raise ValueError(
                        f"shadow run {run.source} holds the target run's own statistics; a shadow classifier "
                        "trained on the target's labels would score them in-sample. Use earlier runs with their "
                        "own membership split"
                    )


@register("shadow_classifier")
def shadow_classifier(
    ctx: AttackContext,
    shadow: Sequence[str] | None = None,
    model: str = "logreg",
    shadow_step: int | None = None,
    k: float = 0.2,
    **params: Any,
) -> np.ndarray:
    """Classifier trained on earlier runs' canaries (shadow mode); scores without the target's labels."""
    if not shadow:
        raise ValueError(
            "shadow_classifier needs the AuditHistory files of earlier runs with known membership: "
            "attack_params={'shadow_classifier': {'shadow': ['run1/history.json', ...]}}"
        )
    return shadow_scores(
        ctx.stats,
        list(shadow),
        reference=ctx.reference,
        history=ctx.history,
        model=model,
        shadow_step=shadow_step,
        k=k,
        seed=ctx.seed,
        **params,
    )
