"""DPConfig: what DP-SGD promises (ε, δ) or how much noise it adds, and how it clips.

Plain data with validation; no torch import. :class:`~mia_guard.defenses.dp.trainer.DPTrainer`
turns it into a noise multiplier, a sample rate and an accountant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Per-sample gradient implementations that work with Hugging Face causal LMs.
#: ``"hooks"``: Opacus layer hooks (layers without a hook fall back to functorch);
#: ``"functorch"``: vmap over every layer; ``"ghost"``: ghost clipping (two backward
#: passes, never materialises per-sample gradients; refuses tied parameters).
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")
ACCOUNTANTS = ("prv", "rdp")


@dataclass(frozen=True)
class DPConfig:
    """Differential privacy settings for :class:`DPTrainer`.

    Give exactly one of ``target_epsilon`` (the noise multiplier is then calibrated so that
    the whole planned run, ``TrainingArguments.max_steps`` or its epochs, spends at most
    that ε, and training never goes beyond it) or ``noise_multiplier`` (σ: noise std =
    σ · ``max_grad_norm`` on the sum of clipped per-sample gradients of one logical batch).

    Attributes:
        target_epsilon: ε the planned run reaches (within 0.01 below) and training never exceeds.
        noise_multiplier: σ, used as given.
        delta: δ of the (ε, δ) guarantee. ``None`` = ``1 / (10 N)`` for ``N`` training
            examples: a factor 10 below ``1/N``, so "publish one random record" is not
            (ε, δ)-DP for any small ε.
        max_grad_norm: per-sample clipping bound C (L2 over all trainable parameters).
        max_epsilon: stop training (``control.should_training_stop``) before the step
            that would take ε above this value. ``None`` = never stop for privacy.
        accountant: ``"prv"`` (tight numerical accountant, Opacus default) or ``"rdp"``.
        poisson_sampling: ``True`` = every example joins each logical batch independently
            with probability q, the sampling the accountant analyses. ``False`` keeps the
            Trainer's shuffled fixed-size batches; ε is then only an approximation.
        grad_sample_mode: one of :data:`GRAD_SAMPLE_MODES`. Opacus' ``"ew"`` (expanded
            weights) is not offered: it fails on Hugging Face models.
        prune_backward: let the backward that feeds Opacus' hooks skip the weight
            gradients they do not need (~15% faster steps on the demo model, identical
            per-sample gradients; see :mod:`.dp_clipping`). Turn off only if told to by the
            error about parameters that reach the loss without passing the embeddings.
    """

    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    max_epsilon: float | None = None
    accountant: str = "prv"
    poisson_sampling: bool = True
    grad_sample_mode: str = "hooks"
    prune_backward: bool = True

    def __post_init__(self) -> None:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "DPConfig needs exactly one of target_epsilon (noise calibrated to reach it) "
                f"or noise_multiplier (noise given); got target_epsilon={self.target_epsilon}, "
                f"noise_multiplier={self.noise_multiplier}"
            )
        _positive("target_epsilon", self.target_epsilon)
        _positive("max_epsilon", self.max_epsilon)
        _positive("max_grad_norm", self.max_grad_norm)
        _positive("noise_multiplier", self.noise_multiplier)
        if self.delta is not None and not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}; leave it None for 1/(10 N)")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.grad_sample_mode == "ew":
            raise ValueError(
                "grad_sample_mode='ew' (expanded weights) does not work with Hugging Face models; "
                "use 'hooks' (default), 'functorch' or 'ghost'"
            )
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {self.grad_sample_mode!r}")

    def resolve_delta(self, dataset_size: int) -> float:
        """δ for a training set of ``dataset_size`` examples: the configured one or ``1/(10 N)``."""
        if dataset_size < 1:
            raise ValueError(f"DP accounting needs a non-empty training set, got {dataset_size} examples")
        return self.delta if self.delta is not None else 1.0 / (10.0 * dataset_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy of the settings."""
        return asdict(self)


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
