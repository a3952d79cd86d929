"""DP-SGD for Hugging Face causal LMs: Opacus inside the ``Trainer``.

Public API::

    from mia_guard.defenses.dp import DPConfig, DPTrainer

    trainer = DPTrainer(model=model, args=TrainingArguments(..., per_device_train_batch_size=16,
                        gradient_accumulation_steps=4), train_dataset=rows, data_collator=collator,
                        dp_config=DPConfig(target_epsilon=8.0, max_grad_norm=1.0))
    trainer.train()
    trainer.dp_epsilon()        # ε spent; also logged as dp/epsilon at every logging step
    trainer.dp_summary()        # JSON-able record for the audit report

For code that runs the model between steps (the audit callback):
:func:`opacus_hooks_disabled` (the one in :mod:`mia_guard.scoring.guards`, which sees the
hooks this trainer attaches) and :func:`unwrap_dp_model`; :func:`detach_grad_sample_hooks`
takes the hooks off a model that is done with DP training. Models Opacus cannot handle
raise :class:`DPIncompatibleModelError` with Opacus' validator message and the fix.

What is handled for Hugging Face causal LMs:

- **Position ids.** GPT-2-style models build ``position_ids`` of shape [1, T]; Opacus then
  sees one row at the position embedding and its per-sample gradient is wrong-shaped.
  The trainer passes ``arange(T)`` repeated to [B, T] (:func:`dp_forward_inputs`).
- **Tied embeddings** (GPT-2's ``lm_head.weight is wte.weight``). ``"hooks"`` mode (default)
  sums both uses per example and is exact (tested against per-example backprops).
  ``"ghost"`` refuses tied weights; untying (``tie_word_embeddings=False``) adds
  vocab × dim parameters (+16.6k, +13% on the demo model) and ghost was still the slowest
  mode there (see benchmarks/dp_step_time.py).
- **Conv1D** (GPT-2's linear layers). Opacus has no rule for it and falls back to functorch;
  :func:`register_hf_grad_samplers` adds exact per-sample gradient and norm rules.
- **Per-sample loss.** Hugging Face's loss mixes examples (token mean over the batch); the
  trainer uses one loss per example (mean over its own tokens), see :mod:`.loss`.
- **Unsupported layers** (BatchNorm, ...): :class:`DPIncompatibleModelError` at construction.

Cost on the demo model (16 × 128 tokens, one CPU thread): a DP step takes about 1.4× the
CPU time of a non-DP step with the default ``"hooks"`` mode (Opacus as shipped: about 2×),
at the same peak memory.

Modules: :mod:`.config` (settings), :mod:`.sampling` (Poisson micro-batches),
:mod:`.loss` (per-sample loss, batched position ids), :mod:`.model` (validation,
hooks, Conv1D samplers), :mod:`.clipping` (clip per physical batch, noise per logical
batch), :mod:`.accounting` (ε), :mod:`.trainer` (the Trainer subclass).
"""

from __future__ import annotations

from ...scoring.guards import opacus_hooks_disabled
from .accounting import PrivacyLedger, calibrate_noise_multiplier
from .config import ACCOUNTANTS, GRAD_SAMPLE_MODES, DPConfig
from .loss import causal_lm_per_sample_loss, dp_forward_inputs
from .model import (
    DPIncompatibleModelError,
    attach_grad_sample_hooks,
    detach_grad_sample_hooks,
    register_hf_grad_samplers,
    unwrap_dp_model,
    validate_for_dp,
)
from .trainer import DPTrainer

__all__ = [
    "ACCOUNTANTS",
    "GRAD_SAMPLE_MODES",
    "DPConfig",
    "DPIncompatibleModelError",
    "DPTrainer",
    "PrivacyLedger",
    "attach_grad_sample_hooks",
    "calibrate_noise_multiplier",
    "causal_lm_per_sample_loss",
    "detach_grad_sample_hooks",
    "dp_forward_inputs",
    "opacus_hooks_disabled",
    "register_hf_grad_samplers",
    "unwrap_dp_model",
    "validate_for_dp",
]
