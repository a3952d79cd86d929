"""Privacy accounting for DP-SGD at a fixed noise multiplier and sample rate.

A thin layer over Opacus' accountants (:mod:`opacus.accountants`): the ε reported here is
exactly what ``RDPAccountant`` / ``PRVAccountant`` return for the same history of
``(noise_multiplier, sample_rate, steps)``.
"""

from __future__ import annotations

import logging

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

logger = logging.getLogger(__name__)

#: Precision of the noise-multiplier search in target-ε mode (ε units, never above the target).
EPSILON_TOLERANCE = 0.01


def calibrate_noise_multiplier(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """The smallest σ (to the search precision) whose ε after ``steps`` steps is ≤ ``target_epsilon``.

    The returned σ spends between ``target_epsilon - EPSILON_TOLERANCE`` and
    ``target_epsilon`` over the ``steps`` steps (Opacus' bisection).
    """
    if steps < 1:
        raise ValueError(f"cannot calibrate noise for {steps} training steps; the run must plan at least one step")
    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=EPSILON_TOLERANCE,
            )
        )
    except ValueError as err:
        raise ValueError(
            f"no noise multiplier reaches ε={target_epsilon} at δ={delta:.3g} over {steps} steps at "
            f"sample rate {sample_rate:.4g} ({err}); raise target_epsilon, or train fewer steps / smaller batches"
        ) from err


class PrivacyLedger:
    """ε spent so far by noisy steps at noise multiplier σ and sample rate q, under δ.

    ``record_step()`` is called once per noisy optimizer step (logical batch). ε is
    cached per step count, so asking for it at every logging step costs one accountant
    evaluation per new step count.
    """

    def __init__(self, *, accountant: str, noise_multiplier: float, sample_rate: float, delta: float) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample rate must lie in (0, 1], got {sample_rate}")
        self.mechanism = accountant
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.delta = float(delta)
        self._accountant = create_accountant(mechanism=accountant)
        self._cache: dict[tuple[int, float], float] = {}

    @property
    def steps(self) -> int:
        """Noisy steps recorded so far."""
        return sum(int(n) for _, _, n in self._accountant.history)

    def record_step(self) -> None:
        """Account one noisy step at (σ, q)."""
        self._accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def catch_up(self, total_steps: int) -> int:
        """Account the steps a resumed run took before this ledger existed; returns how many were added.

        A checkpoint stores the global step, not the accountant: the missing steps are
        assumed to have used the same (σ, q), which holds when the run is resumed with
        the same DPConfig, dataset size and batch settings.
        """
        missing = int(total_steps) - self.steps
        if missing > 0:
            history = [*self._accountant.history, (self.noise_multiplier, self.sample_rate, missing)]
            self._accountant.history = _merge_runs(history)
        return max(missing, 0)

    def epsilon(self, extra_steps: int = 0, delta: float | None = None) -> float:
        """ε after the recorded steps plus ``extra_steps`` more at (σ, q), under ``delta`` (default: the ledger's δ)."""
        delta = self.delta if delta is None else float(delta)
        steps = self.steps + int(extra_steps)
        if steps == 0:
            return 0.0
        key = (steps, delta)
        if key not in self._cache:
            history = list(self._accountant.history)
            if extra_steps:
                history.append((self.noise_multiplier, self.sample_rate, int(extra_steps)))
            probe = create_accountant(mechanism=self.mechanism)
            probe.history = _merge_runs(history)
            self._cache[key] = float(probe.get_epsilon(delta=delta))
        return self._cache[key]

    def steps_within(self, max_epsilon: float, limit: int) -> int:
        """The most further steps (≤ ``limit``) after which ε is still ≤ ``max_epsilon``.

        ε grows with the number of steps, so a bisection over ``[0, limit]`` finds it with
        about log2(limit) accountant evaluations.
        """
        if limit <= 0 or self.epsilon(1) > max_epsilon:
            return 0
        if self.epsilon(limit) <= max_epsilon:
            return int(limit)
        low, high = 1, int(limit)  # epsilon(low) <= max < epsilon(high)
        while high - low > 1:
            mid = (low + high) // 2
            if self.epsilon(mid) <= max_epsilon:
                low = mid
            else:
                high = mid
        return low

    def history(self) -> list[tuple[float, float, int]]:
        """The accountant's composition history: ``(noise_multiplier, sample_rate, steps)`` entries."""
        return [(float(s), float(q), int(n)) for s, q, n in self._accountant.history]


def _merge_runs(history: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Merge consecutive entries with the same (σ, q), the form Opacus' ``step()`` keeps.

    The same steps then give the same ε whether they were recorded one by one or probed
    ahead of time (the PRV accountant's numerics depend on how entries are split).
    """
    merged: list[tuple[float, float, int]] = []
    for sigma, rate, steps in history:
        if merged and merged[-1][0] == sigma and merged[-1][1] == rate:
            merged[-1] = (sigma, rate, merged[-1][2] + steps)
        else:
            merged.append((sigma, rate, steps))
    return merged
