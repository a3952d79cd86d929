"""Secret extraction during training: when the callback or loop runs it, and where its figures go.

Greedy extraction (:func:`mia_guard.analyses.extraction.extract_secrets`) decodes every
canary's secret from its prompt, which costs a forward pass per generated token, so it
runs at its own, slower cadence: by default at the final audit only
(``extraction="final"``), or every N steps as well (``extraction=N``), or never
(``extraction=None``). Its figures join the audit they ran with:

* ``AuditResult.extras["privacy"]``: ``extraction_rate`` (inserted secrets reproduced
  exactly, Clopper-Pearson interval in ``_low`` / ``_high``), ``extraction_rate_nonmember``
  (the control), ``extraction_char_rate`` (+ ``_nonmember``), ``extraction_hint_tokens``:
  what the release gate's ``max_extraction_rate`` judges, what the report's privacy
  section shows and what TensorBoard plots (``mia/privacy/extraction_rate``);
* ``AuditResult.extras["extraction"]``: the whole :class:`ExtractionResult` (per-canary
  continuations, rates, hint, decoding steps and seconds).

Extraction runs on the process that evaluates the audit (rank 0), on the unwrapped
model, inside the audit's guards (eval mode, no gradients, every RNG restored). It is
skipped, with a note in the audit, when it cannot apply: canaries without a prompt
(no tokens before the secret), or a model sharded across processes (FSDP).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

logger = logging.getLogger(__name__)

#: ``extraction=`` values that mean "at the final audit only".
AT_END = ("final", True)


@dataclass(frozen=True)
class ExtractionSchedule:
    """When extraction runs and its decoding options.

    Attributes:
        every_n_steps: also at audits whose step is a multiple of this (``None``: no periodic runs).
        at_end: at the final audit.
        hint_tokens: leading secret tokens in the prompt, an int or ``"auto"`` (see
            :func:`~mia_guard.analyses.extraction.extract_secrets`).
        max_new_tokens: tokens generated per canary (``None``: the secret's length).
        batch_size: canaries decoded together.
    """

    every_n_steps: int | None = None
    at_end: bool = True
    hint_tokens: int | str = "auto"
    max_new_tokens: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("every_n_steps", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"extraction {name} must be a positive integer or None, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"extraction batch_size must be a positive integer, got {self.batch_size!r}")
        if self.hint_tokens != "auto" and (isinstance(self.hint_tokens, bool) or not isinstance(self.hint_tokens, int)
                                           or self.hint_tokens < 0):
            raise ValueError(f"extraction hint_tokens must be 'auto' or an integer >= 0, got {self.hint_tokens!r}")

    @classmethod
    def from_option(cls, extraction: Any, options: Mapping[str, Any] | None = None) -> ExtractionSchedule | None:
        """The schedule of ``extraction=`` (``"final"``/``True``: final audit only; an int N:
        every N steps and the final audit; ``None``/``False``: never; or a schedule or its
        dict) with ``options`` (``hint_tokens``, ``max_new_tokens``, ``batch_size``)."""
        options = dict(options or {})
        unknown = sorted(set(options) - {"hint_tokens", "max_new_tokens", "batch_size"})
        if unknown:
            raise TypeError(f"unknown extraction options {unknown}; known: hint_tokens, max_new_tokens, batch_size")
        if extraction is None or extraction is False:
            if options:
                raise ValueError("extraction_options given but extraction is off (extraction=None)")
            return None
        if isinstance(extraction, ExtractionSchedule):
            return cls(**{**asdict(extraction), **options})
        if isinstance(extraction, Mapping):
            return cls(**{**dict(extraction), **options})
        if extraction in AT_END and isinstance(extraction, (str, bool)):
            return cls(**options)
        if isinstance(extraction, int) and not isinstance(extraction, bool):
            return cls(every_n_steps=extraction, **options)
        raise ValueError(
            f"extraction must be 'final' (the final audit only), a number of steps, None (off) or an "
            f"ExtractionSchedule, got {extraction!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def due(self, step: int, final: bool) -> bool:
        """Whether the audit at ``step`` (``final``: the last of the run) runs extraction."""
        periodic = self.every_n_steps is not None and step % self.every_n_steps == 0
        return periodic or (final and self.at_end)

    def run(self, model: Any, canaries: Any, tokenizer: Any, confidence: float) -> tuple[dict | None, str | None]:
        """``(extras, None)`` with the ``"privacy"`` figures and the ``"extraction"`` record,
        or ``(None, why it was skipped)``. ``model`` is unwrapped (not DDP / Opacus).

        Raises:
            ValueError: extraction does not apply to these canaries (e.g. no prompt before
                the secret and no hint), from :func:`extract_secrets`.
        """
        from ..analyses.extraction import extract_secrets
        from ..scoring.distributed import is_sharded

        if is_sharded(model):
            return None, "secret extraction skipped: the model is sharded across processes (FSDP)"
        result = extract_secrets(
            model, canaries, tokenizer, hint_tokens=self.hint_tokens, max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size, confidence=confidence,
        )
        figures = {name: (None if isinstance(v, float) and math.isnan(v) else v) for name, v in result.figures().items()}
        return {"privacy": figures, "extraction": result.to_dict()}, None


def extract_into(schedule: ExtractionSchedule, model: Any, result: Any, auditor: Any) -> None:
    """Run ``schedule``'s extraction on ``model`` (unwrapped) and merge its figures into the
    audit ``result`` (privacy figures beside any the ``"privacy"`` analysis computed). A
    problem becomes a note on the audit and a warning, never a failed audit."""
    try:
        extras, skipped = schedule.run(model, auditor.canaries, auditor.tokenizer, auditor.confidence)
    except Exception as err:  # noqa: BLE001 - extraction must not cost the audit or the run
        extras, skipped = None, f"secret extraction failed: {type(err).__name__}: {err}"
    if extras is None:
        result.notes.append(skipped)
        logger.warning("mia_guard: audit at step %d: %s", result.step, skipped)
        return
    privacy = result.extras.get("privacy")
    result.extras["privacy"] = {**(privacy if isinstance(privacy, dict) else {}), **extras["privacy"]}
    result.extras["extraction"] = extras["extraction"]


def extract_after(session: Any, model: Any, step: int) -> None:
    """The final audit's extraction when ``step`` was already audited without it (a periodic
    audit at the step the run ended, seen as the last only afterwards): the figures join
    that audit, the release gate decides again, ``history.json`` is saved and every sink
    gets the new figures (:meth:`Sink.update <mia_guard.callbacks.sinks.base.Sink.update>`:
    no point twice; ``audits.jsonl`` has the audit's line replaced). Does nothing when
    extraction is not due at the end,
    already ran, or the last audit is not at ``step``.

    ``session`` is the run's :class:`~mia_guard.callbacks.session.AuditSession`. Every
    process of a distributed run calls it; rank 0 extracts and shares the outcome.
    """
    from ..scoring.guards import opacus_hooks_disabled, preserved_rng, unwrap_model

    last = session.history.last
    schedule = session.extraction
    if schedule is None or not schedule.due(step, True) or last is None or last.step != step:
        return
    if "extraction" in last.extras:
        return
    from .sinks.scalars import audit_scalars

    before = audit_scalars(last)[0]
    group = session.group
    with preserved_rng(), opacus_hooks_disabled(model):
        decision = None
        if group is None or group.is_root:
            extract_into(schedule, unwrap_model(model), last, session.auditor)
            decision = session.decide(last)
        if group is not None:
            payload = group.broadcast_json(
                {"extras": last.extras, "notes": last.notes, "decision": decision.to_dict() if decision else None}
            )
            if not group.is_root:
                last.extras, last.notes = payload["extras"], payload["notes"]
                if payload["decision"] is not None:
                    from ..gate import GateDecision

                    session.decisions[step] = GateDecision.from_dict(payload["decision"])
    if session.is_main:
        new = {tag: value for tag, value in audit_scalars(last)[0].items() if tag not in before}
        session.publish(last, session.decisions.get(step), new=new)
