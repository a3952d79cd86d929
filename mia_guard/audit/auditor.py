"""Auditor: score the canaries once, run every attack, compute metrics, keep the curve.

``Auditor.audit(model, step)`` = :func:`~mia_guard.scoring.forward.score_tokens` (one forward
pass) followed by :meth:`Auditor.evaluate` (attacks and metrics on the statistics, no
model). Distributed code gathers statistics from every rank and calls ``evaluate`` once.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Mapping

import numpy as np

from ..analyses import registry as analysis_registry
from ..analyses.registry import AnalysisInput
from ..attacks import registry as attack_registry
from ..attacks.crossfit import stratified_folds
from ..attacks.registry import AttackContext
from ..canaries.canary_set import CanarySet
from ..canaries.encoding import encode_canaries
from ..scoring.checks import check_token_ids, scorable_model
from ..scoring.forward import score_tokens
from ..scoring.token_stats import TokenStats
from ..stats.estimate import mean_with_ci
from ..stats.metrics import summarize_attack
from .best import EXTRAS_KEY as BEST_KEY
from .best import select_best
from .config import DEFAULT_ATTACKS, DEFAULT_FPRS, REFERENCE_MODES, AuditConfig, config_from_call
from .reference import check_reference_model
from .result import AuditHistory, AuditResult

__all__ = ["AuditFailedError", "Auditor", "AuditConfig", "DEFAULT_ATTACKS", "DEFAULT_FPRS", "REFERENCE_MODES"]


class AuditFailedError(RuntimeError):
    """An audit that cannot produce any figure (e.g. every canary's statistics are NaN/inf).

    Training integrations catch it, record the failed audit (``AuditHistory.failures``,
    the report's ``failed_audits``) and go on training; the release gate fails closed on it.
    """


def check_enough_valid(valid: np.ndarray, is_member: np.ndarray) -> None:
    """Raise :class:`AuditFailedError` naming the cause when no member or no non-member has finite statistics."""
    members, non_members = int((valid & is_member).sum()), int((valid & ~is_member).sum())
    if members and non_members:
        return
    which = "canary" if not valid.any() else ("member canary" if not members else "non-member canary")
    raise AuditFailedError(
        f"non-finite logits: no {which} has finite token statistics ({int((~valid).sum())} of {valid.size} "
        "canaries are NaN/inf): the model's logits are not finite (fp16/bf16 overflow, a diverged run or NaN weights); membership "
        "cannot be measured, so this audit is skipped"
    )


class Auditor:
    """Audits a model's memorization of ``canaries``.

    Args:
        canaries: the CanarySet whose members were inserted into training.
        tokenizer: the training tokenizer (not needed for token-only canaries).
        config: the audit's :class:`~mia_guard.audit.config.AuditConfig` (attacks, FPR
            levels, confidence, folds, seed, analyses, reference mode, batch sizes...);
            default ``AuditConfig()``.
        device: where the model runs while scoring (default: the model's device).
        progress: show a progress bar while scoring.
        reference_model: an explicit reference for calibrated attacks instead of the step-0
            model, e.g. the pretrained base when training resumes from a fine-tuned
            checkpoint. It must be the audited model's architecture with its vocabulary
            (and, given ``reference_tokenizer``, its tokenizer): checked by
            :meth:`prepare_reference` before it is scored
            (:func:`mia_guard.audit.reference.check_reference_model`).
        reference_tokenizer: the tokenizer ``reference_model`` was trained with, if known.
        **options: fields of :class:`~mia_guard.audit.config.AuditConfig` replacing those of
            ``config``, e.g. ``Auditor(canaries, tok, attacks=["loss"], seed=3)``.

    With ``reference="first_audit"`` the first audited model (step 0, before training)
    is the reference of calibrated attacks; :meth:`set_reference` sets one explicitly.
    """

    def __init__(
        self,
        canaries: CanarySet,
        tokenizer: Any = None,
        *,
        config: AuditConfig | Mapping[str, Any] | None = None,
        device: Any = None,
        progress: bool = False,
        reference_model: Any = None,
        reference_tokenizer: Any = None,
        **options: Any,
    ) -> None:
        if not isinstance(canaries, CanarySet):
            raise TypeError(f"canaries must be a mia_guard.CanarySet, got {type(canaries).__name__}")
        self.config = config_from_call(Auditor, config, options)
        if canaries.is_member.all() or not canaries.is_member.any():
            raise ValueError("the canary split has no members or no non-members; membership cannot be measured")
        self.attacks = [attack_registry.get(name) for name in self.config.attacks]
        self.analyses = {name: analysis_registry.get(name) for name in self.config.analyses}
        self.canaries = canaries
        self.tokenizer = tokenizer
        self.encoded = encode_canaries(canaries, tokenizer, prefix_tokens=self.config.prefix_tokens)
        self.device = device
        self.progress = progress
        self.reference_stats: TokenStats | None = None
        self.reference_model = reference_model
        self.reference_tokenizer = reference_tokenizer
        self.history = AuditHistory(canaries.content_hash, canaries.is_member, self.fprs, self.confidence)

    @property
    def fprs(self) -> tuple[float, ...]:
        """The FPR levels of every audit, sorted (``config.fprs``)."""
        return self.config.fprs

    @property
    def confidence(self) -> float:
        """The confidence level of every interval (``config.confidence``)."""
        return self.config.confidence

    @property
    def scoring_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~mia_guard.scoring.forward.score_tokens`: batch and chunk size, device, progress."""
        return dict(batch_size=self.config.batch_size, chunk_size=self.config.chunk_size, device=self.device,
                    progress=self.progress)

    # ------------------------------------------------------------------ public
    def score(self, model: Any) -> TokenStats:
        """The canaries' TokenStats under ``model`` (one forward pass; nothing recorded)."""
        check_token_ids(scorable_model(model), self.encoded, self.canaries.texts)  # names the canary's text
        return score_tokens(model, self.encoded, **self.scoring_options)

    def set_reference(self, reference: Any) -> None:
        """Use ``reference`` (a model, or TokenStats of these canaries) for calibrated attacks."""
        stats = reference if isinstance(reference, TokenStats) else self.score(reference)
        if stats.num_canaries != len(self.canaries):
            raise ValueError(f"reference statistics cover {stats.num_canaries} canaries, expected {len(self.canaries)}")
        self.reference_stats = stats

    def prepare_reference(self, model: Any) -> None:
        """Check the explicit ``reference_model`` against the audited ``model`` and score it (once).

        Integrations call this before training starts, so a wrong reference fails early;
        :meth:`audit` calls it on the first audit otherwise. Nothing happens without a
        ``reference_model`` or once its statistics exist.
        """
        if self.reference_model is None or self.reference_stats is not None:
            return
        check_reference_model(model, self.reference_model, tokenizer=self.tokenizer,
                              reference_tokenizer=self.reference_tokenizer)
        self.set_reference(self.reference_model)

    def audit(self, model: Any, step: int) -> AuditResult:
        """Score the canaries under ``model`` and evaluate every attack; appends to ``history``."""
        self.prepare_reference(model)
        started = time.perf_counter()
        stats = self.score(model)
        return self.evaluate(stats, step, scoring_seconds=time.perf_counter() - started)

    def evaluate(self, stats: TokenStats, step: int, *, scoring_seconds: float = 0.0) -> AuditResult:
        """Attacks and metrics on precomputed ``stats`` (rows in canary order); appends to ``history``.

        An attack that raises ``ValueError`` (it cannot run here, e.g. too few canaries to
        cross-fit) is listed in ``skipped``; one that raises anything else, or returns
        scores that cannot be evaluated, in ``failed_attacks`` (the release gate fails
        closed on it); an analysis that raises leaves ``{"error": ...}`` in its extras.

        Raises:
            AuditFailedError: no member or no non-member has finite statistics.
        """
        if stats.num_canaries != len(self.canaries):
            raise ValueError(f"statistics cover {stats.num_canaries} canaries, expected {len(self.canaries)}")
        started = time.perf_counter()
        config = self.config
        if config.reference == "first_audit" and self.reference_stats is None:
            self.reference_stats = stats
        notes: list[str] = []
        valid = ~stats.nonfinite_canaries()
        if not valid.all():
            notes.append(
                f"{int((~valid).sum())} canaries had NaN/inf token statistics and were left out of every metric "
                f"(indices {np.flatnonzero(~valid)[:10].tolist()}...)"
            )
        is_member = self.canaries.is_member
        check_enough_valid(valid, is_member)
        ctx = self._context(stats, valid)
        supervised = {attack.name for attack in self.attacks if attack.supervised}
        scores, metrics, skipped, failed = {}, {}, {}, {}
        for attack in self.attacks:
            missing = attack.missing_needs(ctx)
            if missing:
                skipped[attack.name] = f"needs {', '.join(missing)}"
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    valid_scores = attack(ctx, **config.params_for(attack.name))
                except ValueError as err:  # e.g. too few canaries to cross-fit: the attack cannot run here
                    skipped[attack.name] = str(err)
                    continue
                except Exception as err:  # a broken attack: recorded, and the gate fails closed on it
                    failed[attack.name] = f"{type(err).__name__}: {err}"
                    continue
            notes.extend(f"{attack.name}: {w.message}" for w in caught)
            try:
                full = np.full(len(self.canaries), np.nan)
                full[valid] = valid_scores
                folds = stratified_folds(is_member[valid], config.n_folds, config.seed) if attack.supervised else None
                metrics[attack.name] = summarize_attack(
                    attack.name, valid_scores, is_member[valid], config.fprs, config.confidence, seed=config.seed,
                    folds=folds,
                )
            except Exception as err:  # scores of the wrong shape, NaN, ...
                failed[attack.name] = f"its scores could not be evaluated ({type(err).__name__}: {err})"
                continue
            scores[attack.name] = full
        extras = {name: self._analysis(name, analysis, stats, scores, metrics, valid, step, notes)
                  for name, analysis in self.analyses.items()}
        best = select_best(
            metrics,
            lambda name, level: summarize_attack(
                name, scores[name][valid], is_member[valid], config.fprs, level, seed=config.seed,
                folds=stratified_folds(is_member[valid], config.n_folds, config.seed) if name in supervised else None,
            ),
            config.confidence,
        )
        if best is not None:
            extras[BEST_KEY] = best.to_dict()
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
            failed_attacks=failed,
        )
        self.history.append(result)
        return result

    # ------------------------------------------------------------------ internals
    def _analysis(self, name: str, analysis: Any, stats: TokenStats, scores: dict, metrics: dict,
                  valid: np.ndarray, step: int, notes: list[str]) -> dict:
        """One analysis's figures; ``{"error": ...}`` (and a note) when it raises, so the audit stands
        and a gate limit on its figures fails closed."""
        config = self.config
        try:
            return analysis(
                AnalysisInput(stats, scores, metrics, self.canaries.is_member, valid, self.canaries, int(step),
                              config.confidence, config.analysis_inputs(), config.seed)
            )
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            notes.append(f"analysis {name!r} failed ({reason}); its figures are missing from this audit")
            return {"error": reason}

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
            n_folds=self.config.n_folds,
            seed=self.config.seed,
        )
