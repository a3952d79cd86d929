"""Preparing a Hugging Face model for per-sample gradients, and getting at it again.

- :func:`validate_for_dp`: Opacus' validator verdict, plus what to do about it.
- :func:`attach_grad_sample_hooks` / :func:`detach_grad_sample_hooks`: Opacus hooks on the
  model itself (no wrapper module, so ``trainer.model`` stays the Hugging Face model and
  ``save_pretrained`` works).
- :func:`unwrap_dp_model`: the model under Opacus wrappers. Hooks attached here are
  registered in :data:`mia_guard.scoring.guards.ATTACHED_HOOKS`, so
  :func:`~mia_guard.scoring.guards.opacus_hooks_disabled` (what the audit uses, and code
  of your own that runs the model between training steps) switches them off.
- :func:`register_hf_grad_samplers`: exact per-sample gradient and norm rules for
  ``transformers.pytorch_utils.Conv1D`` (GPT-2's linear layers), which Opacus would
  otherwise hand to functorch, re-running each layer under vmap.
"""

from __future__ import annotations

import torch
from opacus.grad_sample import (
    AbstractGradSampleHooks,
    AbstractGradSampleModule,
    GradSampleHooks,
    GradSampleHooksFastGradientClipping,
    prepare_module,
    register_grad_sampler,
    register_norm_sampler,
)
from opacus.validators import ModuleValidator
from opacus.validators.errors import UnsupportedModuleError
from torch import nn

from ...scoring.guards import ATTACHED_HOOKS

#: How a physical batch's per-sample losses are reduced before backward, as Opacus' hooks are
#: told: "sum", so the hooks read each example's gradient off the backprops directly (with
#: "mean" they would first multiply every layer's backprops by the batch size).
LOSS_REDUCTION = "sum"


class DPIncompatibleModelError(UnsupportedModuleError):
    """The model has layers Opacus cannot compute per-sample gradients for (or that mix samples)."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {type(e).__name__}: {e}" for e in self.errors)
        super().__init__(
            "Opacus cannot train this model with DP-SGD; opacus.validators.ModuleValidator.validate reports:\n"
            f"{lines}\n"
            "What to do: run `model = opacus.validators.ModuleValidator.fix(model)` before building the trainer "
            "(it swaps BatchNorm for GroupNorm, LSTM for DPLSTM, ...), check it with "
            "`ModuleValidator.validate(model, strict=True)`, and replace by hand any layer it cannot fix."
        )


def validate_for_dp(model: nn.Module) -> None:
    """Raise :class:`DPIncompatibleModelError` listing every layer Opacus rejects; return if none.

    Runs Opacus' module validator (BatchNorm, non-DP LSTM, ...) and its grad-sample check
    (trainable layers holding buffers).
    """
    errors = list(ModuleValidator.validate(model, strict=False))
    errors += GradSampleHooks.validate(model, strict=False)
    if errors:
        raise DPIncompatibleModelError(errors)


def shared_parameters(model: nn.Module) -> list[list[str]]:
    """Groups of names of one trainable parameter tensor used by several modules (tied weights, e.g. wte / lm_head)."""
    owners: dict[int, list[str]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{param_name}" if module_name else param_name
            owners.setdefault(id(param), [])
            if name not in owners[id(param)]:
                owners[id(param)].append(name)
    return [names for names in owners.values() if len(names) > 1]


def attach_grad_sample_hooks(model: nn.Module, *, mode: str, max_grad_norm: float) -> AbstractGradSampleHooks:
    """Attach Opacus' per-sample-gradient hooks to ``model`` in place and return the hooks object.

    ``mode`` ``"hooks"`` / ``"functorch"`` store per-sample gradients in ``p.grad_sample``
    ([batch, *p.shape]); ``"ghost"`` stores per-sample gradient norms only and needs the
    two-pass backward of :class:`~mia_guard.defenses.dp.clipping.PerSampleClipper`.
    The loss convention is Opacus' ``"sum"`` (:data:`LOSS_REDUCTION`): the backward runs
    on the sum of a physical batch's per-sample losses.
    """
    validate_for_dp(model)
    if mode == "ghost":
        tied = shared_parameters(model)
        if tied:
            raise ValueError(
                f"grad_sample_mode='ghost' cannot clip tied parameters {tied}: Opacus' ghost clipping "
                "refuses parameter sharing. Use grad_sample_mode='hooks' (handles tying), or untie the "
                "weights (e.g. GPT2Config(tie_word_embeddings=False), which adds vocab_size × n_embd parameters)"
            )
    if model in ATTACHED_HOOKS or isinstance(model, AbstractGradSampleModule):
        raise ValueError(
            "this model already carries Opacus hooks (an earlier DPTrainer?); call "
            "detach_grad_sample_hooks(model) first, or build the trainer from a fresh model"
        )
    register_hf_grad_samplers()
    kwargs = {"max_grad_norm": max_grad_norm} if mode == "ghost" else {}
    hooks = prepare_module(model, grad_sample_mode=mode, wrap_model=False, loss_reduction=LOSS_REDUCTION, **kwargs)
    ATTACHED_HOOKS[model] = hooks  # where the audit's opacus_hooks_disabled finds them
    return hooks


def detach_grad_sample_hooks(model: nn.Module) -> nn.Module:
    """Remove the hooks :func:`attach_grad_sample_hooks` put on ``model`` and Opacus' per-parameter attributes.

    For a model that leaves DP training (its trainer can no longer train it); returns the model.
    """
    hooks = ATTACHED_HOOKS.pop(model, None)
    if hooks is None:
        raise ValueError("this model carries no Opacus hooks attached by mia_guard")
    hooks.cleanup()
    for p in model.parameters():
        if hasattr(p, "summed_grad"):
            del p.summed_grad
    return model


def unwrap_dp_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model under any Opacus ``GradSampleModule`` wrappers (``model`` itself if none)."""
    while isinstance(model, AbstractGradSampleModule):
        model = model._module
    return model


def register_hf_grad_samplers() -> None:
    """Register per-sample gradient and norm rules for ``transformers``' ``Conv1D`` (idempotent, process-wide).

    ``Conv1D`` computes ``y = x @ W + b`` with ``W`` of shape [in, out]. For activations
    ``a`` [n, ..., in] and output gradients ``g`` [n, ..., out] (already scaled per sample
    by Opacus), sample i's gradients are ``Σ_t a_it ⊗ g_it`` and ``Σ_t g_it``.
    """
    from transformers.pytorch_utils import Conv1D

    if Conv1D not in GradSampleHooks.GRAD_SAMPLERS:
        register_grad_sampler(Conv1D)(conv1d_grad_sample)
    if Conv1D not in GradSampleHooksFastGradientClipping.NORM_SAMPLERS:
        register_norm_sampler(Conv1D)(conv1d_norm_sample)


def conv1d_grad_sample(
    layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of a ``Conv1D``: weight [n, in, out], bias [n, out]."""
    a = activations[0].to(backprops.dtype)
    out = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...i,n...j->nij", a, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...k->nk", backprops)
    return out


def conv1d_norm_sample(
    layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradient L2 norms of a ``Conv1D`` without forming the gradients (ghost clipping), [n] each.

    With positions flattened, ``‖Σ_t a_t ⊗ g_t‖² = Σ_{t,s} (a_t·a_s)(g_t·g_s)`` and
    ``‖Σ_t g_t‖² = Σ_{t,s} g_t·g_s``.
    """
    n = backprops.shape[0]
    a = activations[0].to(backprops.dtype).reshape(n, -1, activations[0].shape[-1])
    g = backprops.reshape(n, -1, backprops.shape[-1])
    ggt = torch.einsum("nik,njk->nij", g, g)
    out = {}
    if layer.weight.requires_grad:
        aat = torch.einsum("nik,njk->nij", a, a)
        out[layer.weight] = torch.einsum("nij,nij->n", ggt, aat).clamp(min=0).sqrt()
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = ggt.sum(dim=(1, 2)).clamp(min=0).sqrt()
    return out
