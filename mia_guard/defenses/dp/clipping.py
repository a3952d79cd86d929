"""Per-sample clipping one physical batch at a time, noise once per logical batch.

A logical batch (one noisy optimizer step) arrives as several physical batches. After
each physical batch's backward, every example's gradient is clipped to norm C and added
into ``p.summed_grad``; the per-sample gradients are then freed (Opacus'
``BatchMemoryManager`` does the same through skipped optimizer steps). The optimizer's
``step()`` adds N(0, σ²C²) noise to ``summed_grad`` once and divides by the expected
logical batch size: the DP-SGD update

    g = (Σ_i clip_C(∇ℓ_i) + N(0, σ²C² I)) / L.

The Trainer's own ``p.grad`` (the unclipped batch gradient) is discarded after every
physical batch, so nothing non-private reaches the optimizer or the logs.

**Pruned backward.** The per-sample gradients come from Opacus' layer hooks, which only
need the gradient with respect to each layer's *output*; the ordinary weight gradients
autograd computes on the side are thrown away. So the backward that feeds the hooks asks
autograd only for the gradients of the trainable embedding weights
(``torch.autograd.backward(loss, inputs=...)``): every layer between the loss and the
embeddings still gets its output gradient (and its hook fires), while the other layers'
weight-gradient products are skipped. Per-sample gradients are identical (the tests check
it); a parameter that the loss reaches only around the embeddings would get none, which
is detected and reported (turn it off with ``DPConfig(prune_backward=False)``).
"""

from __future__ import annotations

import warnings

import torch
from opacus.grad_sample import AbstractGradSampleHooks
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from torch import nn


class PerSampleClipper:
    """Runs backward + per-sample clipping for one physical batch and prepares the noisy step.

    Args:
        model: the model the hooks are attached to.
        hooks: its Opacus hooks (``"hooks"``/``"functorch"`` mode: per-sample gradients in
            ``p.grad_sample``; ``"ghost"`` mode: per-sample norms in ``p._norm_sample``).
            Their loss reduction must be ``"sum"``: the backward runs on Σ_i ℓ_i.
        optimizer: the Opacus optimizer wrapping the Trainer's optimizer
            (:class:`DPOptimizerFastGradientClipping` for ghost mode).
        prune_backward: compute only what the hooks need (see module docstring).
    """

    def __init__(
        self, model: nn.Module, hooks: AbstractGradSampleHooks, optimizer: DPOptimizer, prune_backward: bool = True
    ) -> None:
        if hooks.loss_reduction != "sum":
            raise ValueError(
                f"PerSampleClipper backpropagates a sum of per-sample losses; the hooks expect {hooks.loss_reduction!r}"
            )
        self.hooks = hooks
        self.optimizer = optimizer
        self.ghost = isinstance(optimizer, DPOptimizerFastGradientClipping)
        self.params = list(optimizer.params)
        names = {id(p): name for name, p in model.named_parameters()}
        self.names = [names.get(id(p), "?") for p in self.params]
        self.backward_inputs = _trainable_embedding_weights(model) if prune_backward else []

    def backward(self, per_sample_loss: torch.Tensor) -> None:
        """Backward of a physical batch's per-sample losses [b] (b ≥ 1); adds the clipped sum into ``summed_grad``."""
        if per_sample_loss.dim() != 1 or per_sample_loss.numel() == 0:
            raise ValueError(
                f"expected a non-empty 1-D tensor of per-sample losses, got shape {tuple(per_sample_loss.shape)}"
            )
        if self.ghost:
            self._ghost_backward(per_sample_loss)
            return
        self._hooked_backward(per_sample_loss.sum(), "grad_sample")
        self.optimizer.clip_and_accumulate()
        for p in self.params:
            p.grad_sample = None
            p.grad = None

    def _ghost_backward(self, per_sample_loss: torch.Tensor) -> None:
        # pass 1: per-sample gradient norms from the hooks; pass 2: Σ_i c_i ℓ_i with c_i = min(1, C/‖∇ℓ_i‖)
        for p in self.params:
            p._norm_sample = None
        self._hooked_backward(per_sample_loss.sum(), "_norm_sample", retain_graph=True)
        coefficients = self.hooks.get_clipping_coef().to(per_sample_loss.device).detach()
        for p in self.params:
            p.grad = None
        self.hooks.disable_hooks()
        try:
            (coefficients * per_sample_loss).sum().backward()
        finally:
            self.hooks.enable_hooks()
        for p in self.params:
            if p.grad is not None:
                p.summed_grad = p.grad if p.summed_grad is None else p.summed_grad + p.grad
            p.grad = None

    def _hooked_backward(self, loss: torch.Tensor, attribute: str, retain_graph: bool = False) -> None:
        """Backward that fires the hooks; checks that every parameter got its per-sample ``attribute``."""
        with warnings.catch_warnings():
            # expected with integer token inputs: the embedding's hook fires from its output side, and
            # Opacus' functorch path asks CPU autocast for the ids' integer dtype (and computes in fp32)
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype", category=UserWarning)
            if self.backward_inputs:
                torch.autograd.backward(loss, inputs=self.backward_inputs, retain_graph=retain_graph)
            else:
                loss.backward(retain_graph=retain_graph)
        missing = [name for name, p in zip(self.names, self.params) if getattr(p, attribute, None) is None]
        if missing:
            hint = (
                " The backward was pruned to the embedding weights; if these parameters reach the loss without "
                "passing through the embeddings, use DPConfig(prune_backward=False)."
                if self.backward_inputs
                else ""
            )
            raise RuntimeError(f"no per-sample gradient for {missing}: are they used in the forward pass?{hint}")

    def prepare_step(self) -> None:
        """Leave the state ``optimizer.step()`` expects: everything is in ``summed_grad`` already.

        Hooks mode: empty per-sample gradients (clipping them adds zero). Ghost mode: zero
        ``p.grad`` (accumulating it adds zero). A logical batch with no example at all
        thus still takes its noise-only step, as the accountant assumes.
        """
        for p in self.params:
            if self.ghost:
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = p.new_zeros((0, *p.shape))

    def release(self) -> None:
        """Drop the per-step buffers once the noisy gradient is in ``p.grad`` (from the optimizer's step hook)."""
        for p in self.params:
            p.summed_grad = None
            p.grad_sample = None

    def reset(self) -> None:
        """Forget a partly accumulated logical batch (training stopped inside one); no noise was released for it."""
        self.release()
        for p in self.params:
            p.grad = None


def _trainable_embedding_weights(model: nn.Module) -> list[torch.Tensor]:
    """Distinct trainable ``nn.Embedding`` weights: where a language model's computation starts."""
    found: dict[int, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.weight.requires_grad:
            found[id(module.weight)] = module.weight
    return list(found.values())
