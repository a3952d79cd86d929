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
"""

from __future__ import annotations

import torch
from opacus.grad_sample import AbstractGradSampleHooks
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping


class PerSampleClipper:
    """Runs backward + per-sample clipping for one physical batch and prepares the noisy step.

    Args:
        hooks: the Opacus hooks attached to the model (``"hooks"``/``"functorch"`` mode:
            per-sample gradients in ``p.grad_sample``; ``"ghost"`` mode: norms only).
        optimizer: the Opacus optimizer wrapping the Trainer's optimizer
            (:class:`DPOptimizerFastGradientClipping` for ghost mode).
    """

    def __init__(self, hooks: AbstractGradSampleHooks, optimizer: DPOptimizer) -> None:
        self.hooks = hooks
        self.optimizer = optimizer
        self.ghost = isinstance(optimizer, DPOptimizerFastGradientClipping)
        self.params = list(optimizer.params)

    def backward(self, per_sample_loss: torch.Tensor) -> None:
        """Backward of a physical batch's per-sample losses [b] (b ≥ 1); adds the clipped sum into ``summed_grad``."""
        if per_sample_loss.dim() != 1 or per_sample_loss.numel() == 0:
            raise ValueError(f"expected a non-empty 1-D tensor of per-sample losses, got shape {tuple(per_sample_loss.shape)}")
        if self.ghost:
            self._ghost_backward(per_sample_loss)
        else:
            per_sample_loss.mean().backward()
            self.optimizer.clip_and_accumulate()
            for p in self.params:
                p.grad_sample = None
                p.grad = None

    def _ghost_backward(self, per_sample_loss: torch.Tensor) -> None:
        # pass 1: per-sample gradient norms from the hooks; pass 2: Σ_i c_i ℓ_i with c_i = min(1, C/‖∇ℓ_i‖)
        per_sample_loss.mean().backward(retain_graph=True)
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
        """Drop the per-step buffers once the noisy gradient is in ``p.grad`` (called from the optimizer's step hook)."""
        for p in self.params:
            p.summed_grad = None
            p.grad_sample = None

    def reset(self) -> None:
        """Forget a partly accumulated logical batch (training stopped inside one); no noise was released for it."""
        self.release()
        for p in self.params:
            p.grad = None
