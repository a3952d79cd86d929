"""The attack registry and the input every attack receives.

An attack is a plain function ``fn(ctx: AttackContext, **params) -> np.ndarray`` that
returns one float per canary, shape ``[N]``, **higher = more likely a member**. It
never runs a model: everything it may read is in :class:`AttackContext`.

Attacks that learn from membership labels (``supervised=True``) receive
``ctx.is_member`` and must cross-fit (see :mod:`mia_guard.attacks.crossfit`): no
canary's score may depend on its own label. Unsupervised attacks get
``ctx.is_member = None``.

Attacks are plug-ins of a :class:`~mia_guard.plugins.Registry` (:data:`ATTACKS`): the
built-ins are listed in :data:`BUILTIN_ATTACKS` and imported on first use; other
packages add theirs with :func:`register` or an entry point in the ``mia_guard.attacks``
group (docs/architecture.md). This module imports none of them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..plugins import Registry

if TYPE_CHECKING:
    from ..scoring.token_stats import TokenStats

#: Requirements an attack may declare; the Auditor skips (and reports) attacks whose needs are unmet.
NEEDS = frozenset({"reference", "history", "texts"})


@dataclass(frozen=True)
class AttackContext:
    """Everything an attack may read.

    Attributes:
        stats: the audited model's TokenStats, ``[N, T]``.
        texts: the canaries' texts (``None`` for token-only canaries, e.g. images).
        reference: the same canaries scored under a reference model (e.g. the step-0 /
            base model), or ``None``.
        history: TokenStats of earlier audits of this run, oldest first (excluding
            this one); empty when unknown.
        history_steps: the training step of each entry of ``history``.
        is_member: bool ``[N]`` labels; only set for supervised attacks.
        n_folds: number of cross-fitting folds supervised attacks use.
        seed: seed for any randomness (fold assignment, initialisation).
    """

    stats: TokenStats
    texts: Sequence[str] | None = None
    reference: TokenStats | None = None
    history: Sequence[TokenStats] = ()
    history_steps: Sequence[int] = ()
    is_member: np.ndarray | None = None
    n_folds: int = 5
    seed: int = 0

    @property
    def num_canaries(self) -> int:
        return self.stats.num_canaries


AttackFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Attack:
    """A registered attack: its function and what it needs."""

    name: str
    fn: AttackFn
    supervised: bool = False
    needs: frozenset[str] = field(default_factory=frozenset)
    description: str = ""

    def missing_needs(self, ctx: AttackContext) -> list[str]:
        """The declared needs that ``ctx`` cannot satisfy (empty = runnable)."""
        missing = []
        if "reference" in self.needs and ctx.reference is None:
            missing.append("a reference model's statistics")
        if "history" in self.needs and len(ctx.history) == 0:
            missing.append("at least one earlier audit")
        if "texts" in self.needs and ctx.texts is None:
            missing.append("canary texts")
        return missing

    def __call__(self, ctx: AttackContext, **params) -> np.ndarray:
        """Run the attack and validate its output: float64 ``[N]``, no NaN."""
        missing = self.missing_needs(ctx)
        if missing:
            raise ValueError(f"attack {self.name!r} needs {', '.join(missing)}")
        if not self.supervised:
            ctx = replace(ctx, is_member=None)
        elif ctx.is_member is None:
            raise ValueError(f"attack {self.name!r} learns from membership labels; pass is_member")
        scores = np.asarray(self.fn(ctx, **params), dtype=np.float64)
        if scores.shape != (ctx.num_canaries,):
            raise RuntimeError(
                f"attack {self.name!r} returned shape {scores.shape}, expected ({ctx.num_canaries},)"
            )
        bad = ~np.isfinite(scores)
        if bad.any():
            warnings.warn(
                f"attack {self.name!r} gave {int(bad.sum())} non-finite scores; they are ranked lowest",
                RuntimeWarning,
                stacklevel=2,
            )
            scores = np.where(bad, -np.inf, scores)
        return scores


#: The built-in attacks and the module whose import registers each (loaded on first use).
BUILTIN_ATTACKS: dict[str, str] = {
    **dict.fromkeys(("loss", "zlib", "min_k", "min_k_plus_plus", "reference"), "mia_guard.attacks.reference_free"),
    **dict.fromkeys(("lira_online", "lira_offline", "lira_online_ref"), "mia_guard.attacks.lira"),
    **dict.fromkeys(("seq_lira", "seq_lira_offline", "seq_lira_diag", "seq_lira_ref"),
                    "mia_guard.attacks.sequence_lira"),
    **dict.fromkeys(("seq_lira_pooled", "seq_lira_tokencal", "lira_tokencal"), "mia_guard.attacks.sequence_variants"),
    **dict.fromkeys(("seq_lira_refcal", "seq_lira_refcal_separate", "seq_lira_refcal_history"),
                    "mia_guard.attacks.reference_calibrated"),
    **dict.fromkeys(("trajectory_logreg", "trajectory_rnn"), "mia_guard.attacks.trajectory"),
    **dict.fromkeys(("classifier_logreg", "classifier_mlp", "shadow_classifier"), "mia_guard.attacks.learned"),
}

#: Every attack by name: registered here, built in, or from the ``mia_guard.attacks`` entry-point group.
ATTACKS: Registry[Attack] = Registry("attack", "mia_guard.attacks", BUILTIN_ATTACKS)


def register(
    name: str,
    *,
    supervised: bool = False,
    needs: Sequence[str] = (),
    description: str | None = None,
    overwrite: bool = False,
) -> Callable[[AttackFn], AttackFn]:
    """Decorator registering ``fn`` as attack ``name``.

    Example::

        @register("my_attack", needs=["reference"])
        def my_attack(ctx, scale=1.0):
            return scale * (ctx.reference.masked_mean("nll") - ctx.stats.masked_mean("nll"))
    """
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"unknown attack needs {sorted(unknown)}; allowed: {sorted(NEEDS)}")

    def decorator(fn: AttackFn) -> AttackFn:
        doc = description if description is not None else (fn.__doc__ or "").strip().split("\n")[0]
        ATTACKS.add(name, Attack(name, fn, supervised, frozenset(needs), doc), overwrite=overwrite)
        return fn

    return decorator


def get(name: str) -> Attack:
    """The attack called ``name`` (its module is imported on first use).

    Raises:
        mia_guard.plugins.UnknownNameError: no such attack (the message lists the available ones).
    """
    return ATTACKS.get(name)


def available() -> list[str]:
    """Names of all available attacks, sorted (imports none of them)."""
    return ATTACKS.names()
