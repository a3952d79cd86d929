"""Training-trajectory attacks: classify each canary's sequence of metrics over audits.

A canary's *trajectory* is one feature vector per audit of this run, oldest first, the
current audit last (``ctx.history`` + ``ctx.stats``). Members' statistics move
differently during training than non-members' (their loss falls earlier and further),
so two canaries with the same final loss can still be told apart by how they got there
(SeqMIA, Li et al., CCS 2024). Here the trajectories come for free: the auditor already
scored every canary at each earlier audit, so no distilled snapshot models are needed.

Per-audit features (:data:`FEATURES`), each a per-canary number from that audit's
:class:`~mia_guard.scoring.token_stats.TokenStats`:

========================  ====================================================
``nll``                   mean token NLL
``confidence``            mean logit-scaled confidence ``log p - log(1 - p)``
``entropy``               mean predictive entropy
``logp_std``              mean std of ``log p`` under the model
``top1``                  share of scored tokens that are the model's argmax
``min_k``                 mean ``log p`` of the 20% least likely tokens
``min_k_plus_plus``       Min-K%++ score (k = 20%)
========================  ====================================================

Two registered attacks, both supervised and cross-fitted over stratified canary folds
(:func:`~mia_guard.attacks.crossfit.cross_fit`), so no canary is scored by a model that
saw its own label:

- ``trajectory_logreg``: L2-regularized logistic regression (``C=0.1``) on the
  per-audit levels of all :data:`FEATURES`, their change from the first to the last
  audit and their least-squares slope over the audits (the baseline);
- ``trajectory_rnn``: per-audit vectors of :data:`RNN_FEATURES` (NLL and confidence;
  standardized levels and their change since the first audit) -> GRU -> attention
  pooling over audits -> logit, trained full-batch with Adam on CPU with early stopping
  on a held-out part of each training fold; seeded, so the same inputs give the same
  scores. With all seven features it overfit and lost to the baseline at low FPR.

Both return the classifier's logit, higher = member. They need at least one earlier
audit (``needs=["history"]``), so the Auditor reports them from the second audit on.
Long histories are thinned to at most ``max_audits`` evenly spaced audits that always
include the first and the current one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..scoring.token_stats import TokenStats
from .crossfit import cross_fit, stratified_folds
from .reference_free import min_k, min_k_plus_plus
from .registry import AttackContext, register

FEATURES = ("nll", "confidence", "entropy", "logp_std", "top1", "min_k", "min_k_plus_plus")
#: The RNN's default inputs: with all of FEATURES it overfits (see docs/images_and_trajectories.md).
RNN_FEATURES = ("nll", "confidence")
DEFAULT_MAX_AUDITS = 32


# ---------------------------------------------------------------------------- features
def audit_features(stats: TokenStats, features: Sequence[str] = FEATURES) -> np.ndarray:
    """Per-canary features of one audit, shape ``[N, F]`` float64 (order of ``features``)."""
    columns = []
    for name in features:
        if name == "min_k":
            columns.append(min_k(AttackContext(stats)))
        elif name == "min_k_plus_plus":
            columns.append(min_k_plus_plus(AttackContext(stats)))
        elif name in FEATURES:
            columns.append(stats.masked_mean(name))
        else:
            raise ValueError(f"unknown trajectory feature {name!r}; choose from {', '.join(FEATURES)}")
    return np.stack(columns, axis=1).astype(np.float64)


def select_audits(n_audits: int, max_audits: int) -> np.ndarray:
    """Indices of at most ``max_audits`` evenly spaced audits of ``n_audits``, first and last included."""
    if max_audits < 2:
        raise ValueError(f"max_audits must be >= 2 (a trajectory has a start and an end), got {max_audits}")
    if n_audits <= max_audits:
        return np.arange(n_audits)
    return np.unique(np.round(np.linspace(0, n_audits - 1, max_audits)).astype(np.int64))


def trajectory_tensor(
    ctx: AttackContext, features: Sequence[str] = FEATURES, max_audits: int = DEFAULT_MAX_AUDITS
) -> np.ndarray:
    """Each canary's trajectory, shape ``[N, L, F]``: L audits (oldest first, current last).

    Non-finite entries (a canary whose statistics were NaN at an earlier audit) are
    replaced by the median of that audit's feature over the other canaries; this uses no
    membership labels.
    """
    audits = [*ctx.history, ctx.stats]
    for i, past in enumerate(ctx.history):
        if past.num_canaries != ctx.num_canaries:
            raise ValueError(
                f"history entry {i} covers {past.num_canaries} canaries, the current audit {ctx.num_canaries}; "
                "a trajectory needs every audit of the same canaries in the same order"
            )
    chosen = select_audits(len(audits), max_audits)
    values = np.stack([audit_features(audits[i], features) for i in chosen], axis=1)
    bad = ~np.isfinite(values)
    if bad.any():
        fill = np.nanmedian(np.where(bad, np.nan, values), axis=0)  # [L, F]
        values = np.where(bad, np.nan_to_num(fill, nan=0.0)[None], values)
    return values


def summary_features(trajectories: np.ndarray) -> np.ndarray:
    """The baseline's features ``[N, (L + 2) * F]``: levels, last - first, least-squares slope per audit."""
    n, length, _ = trajectories.shape
    t = np.arange(length, dtype=np.float64)
    t -= t.mean()
    slope = np.einsum("l,nlf->nf", t, trajectories) / max(float(t @ t), 1e-12)
    change = trajectories[:, -1] - trajectories[:, 0]
    return np.concatenate([trajectories.reshape(n, -1), change, slope], axis=1)


# ---------------------------------------------------------------------------- baseline
@register("trajectory_logreg", supervised=True, needs=["history"])
def trajectory_logreg(
    ctx: AttackContext,
    features: Sequence[str] = FEATURES,
    max_audits: int = DEFAULT_MAX_AUDITS,
    C: float = 0.1,
) -> np.ndarray:
    """Logistic regression on trajectory summaries (levels, change, slope per audit; cross-fitted)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if C <= 0:
        raise ValueError(f"C (inverse L2 strength) must be > 0, got {C}")
    x = summary_features(trajectory_tensor(ctx, features, max_audits))
    y = np.asarray(ctx.is_member, dtype=bool)

    def fit(train: np.ndarray):
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(x[train], y[train])

    def score(model, test: np.ndarray) -> np.ndarray:
        return model.decision_function(x[test])

    return cross_fit(y, fit, score, n_folds=ctx.n_folds, seed=ctx.seed)


# ---------------------------------------------------------------------------- SeqMIA-style RNN
class AttentionGRU(torch.nn.Module):
    """``[B, L, D]`` trajectories -> GRU -> attention pooling over the L audits -> logit ``[B]``."""

    def __init__(self, n_inputs: int, hidden: int) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(n_inputs, hidden, batch_first=True)
        self.attention = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(x)  # [B, L, H]
        weights = torch.softmax(self.attention(states).squeeze(-1), dim=1)  # [B, L]
        pooled = torch.einsum("bl,blh->bh", weights, states)
        return self.head(pooled).squeeze(-1)


def _rnn_inputs(trajectories: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Standardized levels and change since the first audit, ``[N, L, 2F]``; scales fitted on ``train`` rows."""
    change = trajectories - trajectories[:, :1]
    parts = []
    for block in (trajectories, change):
        fitted = block[train].reshape(-1, block.shape[2])
        mean, sd = fitted.mean(axis=0), fitted.std(axis=0)
        parts.append((block - mean) / np.where(sd > 1e-12, sd, 1.0))
    return np.concatenate(parts, axis=2)


def fit_attention_gru(
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    hidden: int = 16,
    epochs: int = 100,
    lr: float = 0.02,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> AttentionGRU:
    """Train an :class:`AttentionGRU` on ``inputs [n, L, D]`` and bool ``labels [n]`` (full batch, Adam).

    The loss weighs members by the non-member/member ratio, so an unbalanced split does
    not shift the logit's scale. With ``validation = (inputs, labels)`` the weights of the
    epoch with the lowest validation loss are kept (early stopping). Initialization is
    seeded from ``seed`` inside a forked RNG: the global torch RNG is left as it was.
    """
    x, y = _tensors(inputs, labels)
    n_pos = float(y.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - n_pos) / max(n_pos, 1.0)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttentionGRU(x.shape[2], hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    x_val, y_val = _tensors(*validation) if validation is not None else (None, None)
    best_loss, best_state = float("inf"), None
    for _ in range(epochs):
        model.train()
        with torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        if x_val is not None:
            model.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(model(x_val), y_val))
            if val_loss < best_loss:
                best_loss, best_state = val_loss, {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


def _tensors(inputs: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(np.asarray(labels, dtype=np.float32))


@register("trajectory_rnn", supervised=True, needs=["history"])
def trajectory_rnn(
    ctx: AttackContext,
    features: Sequence[str] = RNN_FEATURES,
    max_audits: int = DEFAULT_MAX_AUDITS,
    hidden: int = 16,
    epochs: int = 100,
    lr: float = 0.02,
    weight_decay: float = 1e-3,
    early_stopping: bool = True,
) -> np.ndarray:
    """SeqMIA-style attention GRU over the per-audit metric trajectory (cross-fitted).

    With ``early_stopping`` a stratified fifth of each fold's training canaries is held
    out to pick the epoch (the lowest validation loss); those canaries are still scored
    only by the fold model that never saw them.
    """
    if hidden < 1 or epochs < 1 or lr <= 0 or weight_decay < 0:
        raise ValueError(
            f"trajectory_rnn needs hidden >= 1, epochs >= 1, lr > 0, weight_decay >= 0; "
            f"got {hidden}, {epochs}, {lr}, {weight_decay}"
        )
    trajectories = trajectory_tensor(ctx, features, max_audits)
    y = np.asarray(ctx.is_member, dtype=bool)

    def fit(train: np.ndarray):
        inputs = _rnn_inputs(trajectories, train)
        options = dict(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=ctx.seed)
        if early_stopping:
            held = stratified_folds(y[train], _inner_folds(y[train]), ctx.seed) == 0
            fitted, checked = train[~held], train[held]
            model = fit_attention_gru(inputs[fitted], y[fitted], validation=(inputs[checked], y[checked]), **options)
        else:
            model = fit_attention_gru(inputs[train], y[train], **options)
        return model, inputs

    def score(fitted, test: np.ndarray) -> np.ndarray:
        model, inputs = fitted
        with torch.no_grad():
            return model(torch.as_tensor(inputs[test], dtype=torch.float32)).double().numpy()

    return cross_fit(y, fit, score, n_folds=ctx.n_folds, seed=ctx.seed)


def _inner_folds(labels: np.ndarray) -> int:
    """Folds for the early-stopping split: 5, or fewer when a class has fewer canaries (at least 2)."""
    smallest = int(min(labels.sum(), (~labels).sum()))
    if smallest < 2:
        raise ValueError(
            "early stopping needs at least 2 members and 2 non-members in each training fold; "
            "use more canaries or early_stopping=False"
        )
    return min(5, smallest)
