"""Auditor: score the canaries once, run every attack, compute metrics, keep the curve.

``Auditor.audit(model, step)`` = :func:`~mia_guard.scoring.forward.score_tokens` (one forward
pass) followed by :meth:`Auditor.evaluate` (attacks and metrics on the statistics, no
model). Distributed code gathers statistics from every rank and calls ``evaluate`` once.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from .. import attacks as attack_registry
from ..analyses import registry as analysis_registry
from ..analyses.registry import AnalysisInput
from ..attacks.crossfit import stratified_folds
from ..attacks.registry import AttackContext
from ..canaries.canary_set import CanarySet
from ..canaries.encoding import encode_canaries
from ..scoring.forward import score_tokens
from ..scoring.token_stats import TokenStats
from ..stats.estimate import mean_with_ci
from ..stats.metrics import summarize_attack
from .result import AuditHistory, AuditResult

DEFAULT_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference", "lira_online", "seq_lira")
DEFAULT_FPRS = (0.001, 0.01, 0.1)
REFERENCE_MODES = ("first_audit", "none")


class Auditor:
    """Audits a model's memorization of ``canaries``.

    Args:
        canaries: the CanarySet whose members were inserted into training.
        tokenizer: the training tokenizer (not needed for token-only canaries).
        attacks: names of registered attacks (see ``mia_guard.attacks.available()``).
        attack_params: extra keyword arguments per attack, e.g. ``{"min_k": {"k": 0.1}}``.
        fprs: false-positive rates at which TPR is reported.
        confidence: confidence level of every interval.
        reference: ``"first_audit"`` uses the first audited model (step 0, before
            training) as the reference for calibrated attacks; ``"none"`` disables it;
            :meth:`set_reference` sets one explicitly.
        batch_size, chunk_size, device, progress: passed to :func:`score_tokens`.
        prefix_tokens: leave this many leading tokens of text/token canaries unscored.
        n_folds: cross-fitting folds for attacks that learn from labels.
        seed: seed for folds and bootstrap intervals.
        analyses: names of registered analyses to run after the attacks (results in
            ``AuditResult.extras[name]``), with ``analysis_options`` passed to each.
    """

    def __init__(
        self,
        canaries: CanarySet,
        tokenizer: Any = None,
        *,
        attacks: Sequence[str] = DEFAULT_ATTACKS,
        attack_params: Mapping[str, Mapping[str, Any]] | None = None,
        fprs: Sequence[float] = DEFAULT_FPRS,
        confidence: float = 0.95,
        reference: str = "first_audit",
        batch_size: int | None = None,
        chunk_size: int | None = None,
        device: Any = None,
        progress: bool = False,
        prefix_tokens: int = 0,
        n_folds: int = 5,
        seed: int = 0,
        analyses: Sequence[str] = (),
        analysis_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(canaries, CanarySet):
            raise TypeError(f"canaries must be a mia_guard.CanarySet, got {type(canaries).__name__}")
        if reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}")
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        bad_fprs = [f for f in fprs if not 0 < f < 1]
        if bad_fprs:
            raise ValueError(f"FPR levels must be in (0, 1), got {bad_fprs}")
        duplicates = sorted({name for name in attacks if list(attacks).count(name) > 1})
        if duplicates:
            raise ValueError(f"attacks {duplicates} are listed more than once; list each attack once")
        self.attacks = [attack_registry.get(name) for name in attacks]  # raises on unknown names
        self.attack_params = {k: dict(v) for k, v in (attack_params or {}).items()}
        unknown = set(self.attack_params) - set(attacks)
        if unknown:
            raise ValueError(f"attack_params given for attacks not in the list: {sorted(unknown)}")
        if canaries.is_member.all() or not canaries.is_member.any():
            raise ValueError("the canary split has no members or no non-members; membership cannot be measured")
        self.canaries = canaries
        self.tokenizer = tokenizer
        self.encoded = encode_canaries(canaries, tokenizer, prefix_tokens=prefix_tokens)
        self.fprs = tuple(sorted(fprs))
        self.confidence = confidence
        self.reference_mode = reference
        self.reference_stats: TokenStats | None = None
        self.scoring_options = dict(batch_size=batch_size, chunk_size=chunk_size, device=device, progress=progress)
        self.n_folds = n_folds
        self.seed = seed
        self.analyses = {name: analysis_registry.get(name) for name in analyses}  # raises on unknown names
        self.analysis_options = dict(analysis_options or {})
        self.history = AuditHistory(canaries.content_hash, canaries.is_member, self.fprs, confidence)

    # ------------------------------------------------------------------ public
    def score(self, model: Any) -> TokenStats:
        """The canaries' TokenStats under ``model`` (one forward pass; nothing recorded)."""
        return score_tokens(model, self.encoded, **self.scoring_options)

    def set_reference(self, reference: Any) -> None:
        """Use ``reference`` (a model, or TokenStats of these canaries) for calibrated attacks."""
        stats = reference if isinstance(reference, TokenStats) else self.score(reference)
        if stats.num_canaries != len(self.canaries):
            raise ValueError(f"reference statistics cover {stats.num_canaries} canaries, expected {len(self.canaries)}")
        self.reference_stats = stats

    def audit(self, model: Any, step: int) -> AuditResult:
        """Score the canaries under ``model`` and evaluate every attack; appends to ``history``."""
        started = time.perf_counter()
        stats = self.score(model)
        return self.evaluate(stats, step, scoring_seconds=time.perf_counter() - started)

    def evaluate(self, stats: TokenStats, step: int, *, scoring_seconds: float = 0.0) -> AuditResult:
        """Attacks and metrics on precomputed ``stats`` (rows in canary order); appends to ``history``."""
        if stats.num_canaries != len(self.canaries):
            raise ValueError(f"statistics cover {stats.num_canaries} canaries, expected {len(self.canaries)}")
        started = time.perf_counter()
        if self.reference_mode == "first_audit" and self.reference_stats is None:
            self.reference_stats = stats
        notes: list[str] = []
        valid = ~stats.nonfinite_canaries()
        if not valid.all():
            notes.append(
                f"{int((~valid).sum())} canaries had NaN/inf token statistics and were left out of every metric "
                f"(indices {np.flatnonzero(~valid)[:10].tolist()}...)"
            )
        is_member = self.canaries.is_member
        ctx = self._context(stats, valid)
        scores, metrics, skipped = {}, {}, {}
        for attack in self.attacks:
            missing = attack.missing_needs(ctx)
            if missing:
                skipped[attack.name] = f"needs {', '.join(missing)}"
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    valid_scores = attack(ctx, **self.attack_params.get(attack.name, {}))
                except ValueError as err:  # e.g. too few canaries to cross-fit
                    skipped[attack.name] = str(err)
                    continue
            notes.extend(f"{attack.name}: {w.message}" for w in caught)
            full = np.full(len(self.canaries), np.nan)
            full[valid] = valid_scores
            scores[attack.name] = full
            folds = stratified_folds(is_member[valid], self.n_folds, self.seed) if attack.supervised else None
            metrics[attack.name] = summarize_attack(
                attack.name, valid_scores, is_member[valid], self.fprs, self.confidence, seed=self.seed, folds=folds
            )
        extras = {
            name: analysis(
                AnalysisInput(stats, scores, metrics, is_member, valid, self.canaries, int(step), self.confidence,
                              self.analysis_options, self.seed)
            )
            for name, analysis in self.analyses.items()
        }
        per_canary_nll = stats.masked_mean("nll")
        result = AuditResult(
            step=int(step),
            metrics=metrics,
            scores=scores,
            member_nll=mean_with_ci(per_canary_nll[valid & is_member], self.confidence),
            nonmember_nll=mean_with_ci(per_canary_nll[valid & ~is_member], self.confidence),
            skipped=skipped,
            notes=notes,
            invalid_canaries=np.flatnonzero(~valid).tolist(),
            seconds={"scoring": scoring_seconds, "attacks": time.perf_counter() - started},
            stats=stats,
            extras=extras,
        )
        self.history.append(result)
        return result

    # ------------------------------------------------------------------ internals
    def _context(self, stats: TokenStats, valid: np.ndarray) -> AttackContext:
        past = [r for r in self.history.results if r.stats is not None]
        texts = self.canaries.texts
        return AttackContext(
            stats=stats.subset(valid),
            texts=[t for t, ok in zip(texts, valid) if ok] if texts is not None else None,
            reference=self.reference_stats.subset(valid) if self.reference_stats is not None else None,
            history=[r.stats.subset(valid) for r in past],
            history_steps=[r.step for r in past],
            is_member=self.canaries.is_member[valid],
            n_folds=self.n_folds,
            seed=self.seed,
        )
