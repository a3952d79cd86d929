"""When to audit: every N steps, or as often as an overhead budget allows.

:class:`AuditCadence` is asked at every optimizer step whether an audit is due and told
how long each audit took. It measures the run itself, on the main process, in wall
seconds: *training time* is the time since training began minus the time spent in
audits, so it holds everything a step costs (data loading, logging, evaluation).

* Fixed cadence (``overhead_budget=None``): due when ``step % every_n_steps == 0``.
* Overhead budget ``f`` (e.g. 0.03): due when the audits so far, the next one and the
  final one (whose cost is reserved from the start) fit in ``f`` of the training time::

      spent + 2 * last_audit_seconds <= f * training_seconds

  so at any point, and at the end, audit time stays within ``f`` of training time. The
  step-0 and final audits always run; when they alone exceed the budget (a short run, an
  expensive audit) no other audit runs and the report says so. ``every_n_steps``, if
  given, is then the shortest spacing between audits.

The prediction of the next due step uses the mean step time so far; the condition is
checked again when that step comes. In a distributed run only the main process measures:
at those decision steps (and only there) its answer is broadcast, so every process
audits at the same steps.

Every audit's cost goes into ``AuditResult.extras["cost"]``: ``seconds`` (this audit,
scoring to history write), ``overhead`` (all audits so far / training time; absent before
training starts), ``training_seconds``, ``budget``. The sinks write the first two as
``mia/audit/seconds`` and ``mia/audit/overhead``; :meth:`AuditCadence.summary` goes into
the report's ``run_info``.
"""

from __future__ import annotations

import math
import time
from typing import Any


class AuditCadence:
    """Decides at which steps to audit (see the module docstring).

    Args:
        every_n_steps: fixed cadence; with a budget, the shortest spacing (``None``: none).
        overhead_budget: the largest fraction of training time audits may take, in (0, 1),
            or ``None`` for the fixed cadence.
        clock: wall-clock seconds (``time.perf_counter``; replaceable in tests).
    """

    def __init__(self, every_n_steps: int | None, overhead_budget: float | None, clock: Any = time.perf_counter) -> None:
        if overhead_budget is not None and not (
            isinstance(overhead_budget, (int, float)) and not isinstance(overhead_budget, bool)
            and 0 < overhead_budget < 1
        ):
            raise ValueError(f"overhead_budget must be a fraction in (0, 1), e.g. 0.03 for 3%, got {overhead_budget!r}")
        self.every_n_steps = every_n_steps
        self.budget = float(overhead_budget) if overhead_budget is not None else None
        self.clock = clock
        self._started: float | None = None  # when training began (after the first audit)
        self._start_step = 0
        self._audit_seconds_since_start = 0.0
        self.spent = 0.0  # all audits, the first included
        self.last_cost: float | None = None
        self.last_audit_step: int | None = None
        self.audits = 0
        self._next_check: int | None = None

    # ------------------------------------------------------------------ measurements
    def start_training(self, step: int) -> None:
        """Training begins (or resumes) at ``step``; the training clock starts now."""
        self._started = self.clock()
        self._start_step = step
        self._audit_seconds_since_start = 0.0
        self._next_check = step + 1

    def training_seconds(self) -> float:
        """Wall seconds of training so far (audits excluded); 0 before training starts."""
        if self._started is None:
            return 0.0
        return max(0.0, self.clock() - self._started - self._audit_seconds_since_start)

    def record(self, step: int, seconds: float) -> None:
        """An audit at ``step`` took ``seconds`` (wall, everything included)."""
        self.spent += seconds
        if self._started is not None:
            self._audit_seconds_since_start += seconds
        self.last_cost = seconds
        self.last_audit_step = step
        self.audits += 1
        if self._started is not None and self.budget is not None:
            self._next_check = self._predict(step)

    def figures(self, seconds: float) -> dict[str, Any]:
        """``extras["cost"]`` of an audit that has taken ``seconds`` so far (before :meth:`record`)."""
        training = self.training_seconds()
        out: dict[str, Any] = {"seconds": seconds, "training_seconds": training, "budget": self.budget}
        if training > 0:
            out["overhead"] = (self.spent + seconds) / training
        return out

    # ------------------------------------------------------------------ decisions
    def due(self, step: int, group: Any = None) -> bool:
        """Whether to audit after optimizer step ``step``. In a distributed run (``group``,
        a :class:`~mia_guard.scoring.distributed.ProcessGroup`) every process must call it
        at every step; the main process's answer is shared at decision steps only."""
        if self.budget is None:
            return self.every_n_steps is not None and step % self.every_n_steps == 0
        if self._next_check is None or step < self._next_check:
            return False
        answer = None
        if group is None or group.is_root:
            answer = {"due": self._fits() and self._spaced(step)}
            if not answer["due"]:
                answer["next"] = self._predict(step)
        if group is not None:
            answer = group.broadcast_json(answer)
        if not answer["due"]:
            self._next_check = answer["next"]
        return bool(answer["due"])

    def shared_next_check(self, group: Any) -> None:
        """After an audit in a distributed run: every process takes the main process's next
        decision step (a collective)."""
        if self.budget is not None and group is not None:
            self._next_check = group.broadcast_json(self._next_check if group.is_root else None)

    def summary(self) -> dict[str, Any]:
        """The cadence and measured overhead for the report's ``run_info``."""
        training = self.training_seconds()
        out: dict[str, Any] = {
            "audit_cadence": "overhead budget" if self.budget is not None else "fixed",
            "every_n_steps": self.every_n_steps,
            "audit_seconds": round(self.spent, 3),
            "training_seconds": round(training, 3),
        }
        if self.budget is not None:
            out["overhead_budget"] = self.budget
        if training > 0:
            out["audit_overhead"] = round(self.spent / training, 4)
            if self.budget is not None and self.spent > self.budget * training:
                out["over_budget"] = (
                    f"{self.audits} audits took {self.spent / training:.1%} of the training time, over the budget of "
                    f"{self.budget:.1%}: the first and final audits always run; for a run this short, use fewer "
                    "canaries or a larger budget"
                )
        return out

    # ------------------------------------------------------------------ internals
    def _fits(self) -> bool:
        return self.spent + 2 * (self.last_cost or 0.0) <= self.budget * self.training_seconds()

    def _spaced(self, step: int) -> bool:
        last = self.last_audit_step if self.last_audit_step is not None else self._start_step
        return self.every_n_steps is None or step - last >= self.every_n_steps

    def _predict(self, step: int) -> int:
        """The first step at which the budget condition should hold, at the mean step time so far."""
        training = self.training_seconds()
        steps_done = step - self._start_step
        needed = (self.spent + 2 * (self.last_cost or 0.0)) / self.budget
        if steps_done <= 0 or training <= 0:
            ahead = 1
        else:
            per_step = training / steps_done
            ahead = max(1, math.ceil((needed - training) / per_step))
        if self.every_n_steps is not None and self.last_audit_step is not None:
            ahead = max(ahead, self.last_audit_step + self.every_n_steps - step)
        return step + ahead
