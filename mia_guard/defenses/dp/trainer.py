"""DPTrainer: DP-SGD (Opacus) inside the Hugging Face ``Trainer``.

What changes against ``Trainer``:

- **Sampling.** ``get_train_dataloader`` draws Poisson logical batches of expected size
  L = ``per_device_train_batch_size`` × ``gradient_accumulation_steps`` (sample rate
  q = L/N) and hands each out as exactly ``gradient_accumulation_steps`` micro-batches,
  so the Trainer's optimizer step is the logical-batch boundary. Empty batches are fine.
- **Loss.** :meth:`DPTrainer.compute_per_sample_loss` gives one loss per example (mean
  next-token NLL over its own labels, see :mod:`.dp_loss`); a physical batch backpropagates
  their *sum* (Opacus' ``"sum"`` convention: each example's gradient is read off unscaled),
  and the optimizer divides the noisy sum by the expected logical batch size L. The
  Trainer's gradient-accumulation loss scaling is not used.
- **Clipping and noise.** Per-sample gradients are clipped to ``max_grad_norm`` after each
  physical batch; the noise is added once per logical batch and the sum divided by L
  (:mod:`.dp_clipping`). The Trainer's own gradient clipping sees no gradient (a no-op).
- **Accounting.** Every noisy step is recorded at (σ, q); ``dp/epsilon``, ``dp/delta``,
  ``dp/noise_multiplier`` and ``dp/steps`` join every ``log()`` call (so TensorBoard and
  ``state.log_history`` carry them); ``dp_epsilon()`` and ``dp_summary()`` give them on demand.
  The logged ``grad_norm`` is the norm of the privatized gradient of the last step.
- **Budget.** Training stops (``control.should_training_stop``) before the step that would
  take ε above ``max_epsilon`` or ``target_epsilon``: the calibrated run itself ends within
  the target, and a longer run (a second ``train()``, more steps) is cut at it.

Logged ``loss`` is Σ (per-sample losses) / L per optimizer step: the same normalisation
as the gradient. Evaluation (``model.eval()``) uses the Trainer's ordinary loss.

Single process only: Poisson sampling and once-per-step noise across ranks are not implemented.
Sampling and noise use torch's seeded PRNG (Opacus' non-secure mode): right for experiments
and audits; a production release would also want Opacus' ``secure_mode`` (not offered here).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.utils import is_datasets_available

from .accounting import PrivacyLedger, calibrate_noise_multiplier
from .clipping import PerSampleClipper
from .config import DPConfig
from .loss import causal_lm_per_sample_loss, dp_forward_inputs
from .model import attach_grad_sample_hooks
from .sampling import EmptyBatchSafeCollator, PoissonMicroBatchSampler, SamplingPlan, batch_rows, slice_rows

logger = logging.getLogger(__name__)


class DPTrainer(Trainer):
    """A ``transformers.Trainer`` that trains with DP-SGD as configured by ``dp_config``.

    Build it like a ``Trainer`` (``model``, ``args``, ``train_dataset``, ``data_collator``,
    ...) plus ``dp_config``. The model is validated and Opacus hooks are attached at
    construction, so an incompatible model fails here with Opacus' validator message.
    Batches must carry ``labels`` (e.g. ``DataCollatorForLanguageModeling(mlm=False)``).
    """

    def __init__(self, *args: Any, dp_config: DPConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dp_config = dp_config
        _check_supported(self)
        self._dp_plan = SamplingPlan(
            dataset_size=len(self.train_dataset),
            physical_batch_size=self.args.per_device_train_batch_size,
            accumulation_steps=self.args.gradient_accumulation_steps,
        )
        self.dp_delta = dp_config.resolve_delta(self._dp_plan.dataset_size)
        self._dp_hooks = attach_grad_sample_hooks(
            self.model, mode=dp_config.grad_sample_mode, max_grad_norm=dp_config.max_grad_norm
        )
        self._dp_ledger: PrivacyLedger | None = None
        self._dp_clipper: PerSampleClipper | None = None
        self._dp_step_limit: int | None = None
        self._dp_last_grad_norm: float | None = None
        self.add_callback(_PrivacyBudgetCallback(self))
        if not dp_config.poisson_sampling:
            logger.warning(
                "DPConfig(poisson_sampling=False): batches are shuffled fixed-size ones, while the accountant "
                "assumes Poisson sampling; the reported ε is an approximation, not a guarantee"
            )

    # ---- data -------------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """Poisson-sampled micro-batches (see module docstring); the Trainer's loader if ``poisson_sampling=False``."""
        if not self.dp_config.poisson_sampling:
            return super().get_train_dataloader()
        dataset, collator = self.train_dataset, self.data_collator
        if _is_hf_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="training")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        generator = torch.Generator().manual_seed(seed)
        sampler = PoissonMicroBatchSampler(
            num_samples=self._dp_plan.dataset_size,
            sample_rate=self._dp_plan.sample_rate,
            micro_batches=self._dp_plan.accumulation_steps,
            steps=self._dp_plan.poisson_steps_per_epoch,
            generator=generator,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=EmptyBatchSafeCollator(collator, dataset),
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    # ---- optimizer --------------------------------------------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer wrapped in Opacus' DP optimizer (built once per trainer)."""
        if self._dp_clipper is not None:
            return self.optimizer
        base = super().create_optimizer(model)
        config, plan = self.dp_config, self._dp_plan
        sigma = config.noise_multiplier
        if sigma is None:
            sigma = calibrate_noise_multiplier(
                target_epsilon=config.target_epsilon,
                delta=self.dp_delta,
                sample_rate=plan.sample_rate,
                steps=self._planned_steps(),
                accountant=config.accountant,
            )
        self._dp_ledger = PrivacyLedger(
            accountant=config.accountant, noise_multiplier=sigma, sample_rate=plan.sample_rate, delta=self.dp_delta
        )
        optimizer_cls = DPOptimizerFastGradientClipping if config.grad_sample_mode == "ghost" else DPOptimizer
        dp_optimizer = optimizer_cls(
            base,
            noise_multiplier=sigma,
            max_grad_norm=config.max_grad_norm,
            expected_batch_size=plan.logical_batch_size,
            loss_reduction="mean",  # the optimizer's side: divide the noisy sum by L (the hooks sum, see dp_model)
        )
        dp_optimizer.attach_step_hook(self._after_noise)
        self._dp_clipper = PerSampleClipper(self.model, self._dp_hooks, dp_optimizer, config.prune_backward)
        self.optimizer = dp_optimizer
        return dp_optimizer

    def _planned_steps(self) -> int:
        """Optimizer steps ``train()`` will take, by the Trainer's formula over this trainer's loader length."""
        if self.args.max_steps > 0:
            return int(self.args.max_steps)
        plan = self._dp_plan
        if self.dp_config.poisson_sampling:
            per_epoch = plan.poisson_steps_per_epoch
        else:
            batches = plan.dataset_size / plan.physical_batch_size
            batches = math.floor(batches) if self.args.dataloader_drop_last else math.ceil(batches)
            per_epoch = max(math.ceil(batches / plan.accumulation_steps), 1)
        return math.ceil(self.args.num_train_epochs * per_epoch)

    def _after_noise(self, optimizer: DPOptimizer) -> None:
        # Opacus step hook: runs once per logical batch, after noise and scaling, before the update
        self._dp_ledger.record_step()
        norms = torch.stack([p.grad.detach().norm() for p in optimizer.params if p.grad is not None])
        self._dp_last_grad_norm = float(torch.linalg.vector_norm(norms))
        self._dp_clipper.release()

    # ---- training step ----------------------------------------------------------------------

    def compute_per_sample_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """One loss per row of ``inputs``, shape [B]; row i's loss may depend on row i only.

        Default: causal LM, mean next-token NLL over the row's ``labels`` != -100
        (:func:`~mia_guard.defenses.dp.loss.causal_lm_per_sample_loss`). Override for other
        model types, keeping the one-loss-per-example contract.
        """
        if "labels" not in inputs:
            raise KeyError(
                "DPTrainer computes a per-sample causal-LM loss from `labels`, but the batch has none "
                f"(keys: {sorted(inputs)}); use DataCollatorForLanguageModeling(mlm=False) or add labels to the dataset"
            )
        outputs = model(**dp_forward_inputs(model, inputs))
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return causal_lm_per_sample_loss(logits, inputs["labels"])

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """Forward/backward in physical chunks of ≤ ``per_device_train_batch_size`` rows, clipping each example.

        Returns Σ (per-sample losses) / L, detached (the Trainer sums it over the micro-batches
        of a step). On the micro-batch that ends a logical batch, the optimizer is left ready
        for its noisy step.
        """
        model.train()
        inputs = self._prepare_inputs(inputs)
        rows, chunk = batch_rows(inputs), self._dp_plan.physical_batch_size
        loss_sum = torch.zeros((), device=self.args.device)
        for start in range(0, rows, chunk):
            with self.compute_loss_context_manager():
                per_sample = self.compute_per_sample_loss(model, slice_rows(inputs, start, start + chunk))
            self._dp_clipper.backward(per_sample)
            loss_sum += per_sample.detach().sum()
        if self.accelerator.sync_gradients:
            self._dp_clipper.prepare_step()
        return loss_sum / self._dp_plan.logical_batch_size

    # ---- privacy reporting ------------------------------------------------------------------

    def dp_epsilon(self, delta: float | None = None) -> float:
        """ε spent so far (0 before the first step) under ``delta`` (default: the run's δ)."""
        return 0.0 if self._dp_ledger is None else self._dp_ledger.epsilon(delta=delta)

    def dp_budget(self) -> float | None:
        """The ε training may not exceed: the smaller of ``max_epsilon`` and ``target_epsilon`` (``None``: none)."""
        limits = [e for e in (self.dp_config.max_epsilon, self.dp_config.target_epsilon) if e is not None]
        return min(limits) if limits else None

    def dp_summary(self) -> dict[str, Any]:
        """JSON-able record of the guarantee, for reports: ε, δ, σ, q, steps, L, settings, accountant history."""
        ledger = self._dp_ledger
        return {
            "epsilon": self.dp_epsilon(),
            "delta": self.dp_delta,
            "noise_multiplier": None if ledger is None else ledger.noise_multiplier,
            "sample_rate": self._dp_plan.sample_rate,
            "steps": 0 if ledger is None else ledger.steps,
            "logical_batch_size": self._dp_plan.logical_batch_size,
            "dataset_size": self._dp_plan.dataset_size,
            "history": [] if ledger is None else [list(h) for h in ledger.history()],
            "config": self.dp_config.to_dict(),
        }

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds ``dp/epsilon``, ``dp/delta``, ``dp/noise_multiplier``, ``dp/steps``; ``grad_norm`` is the private one."""
        if self._dp_ledger is not None:
            logs["dp/epsilon"] = self.dp_epsilon()
            logs["dp/delta"] = self.dp_delta
            logs["dp/noise_multiplier"] = self._dp_ledger.noise_multiplier
            logs["dp/steps"] = self._dp_ledger.steps
            if "grad_norm" in logs and self._dp_last_grad_norm is not None:
                logs["grad_norm"] = self._dp_last_grad_norm
        super().log(logs, start_time)


class _PrivacyBudgetCallback(TrainerCallback):
    """Catches the accountant up after a resume; stops training before the privacy budget is exceeded."""

    def __init__(self, trainer: DPTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        ledger = trainer._dp_ledger
        trainer._dp_clipper.reset()
        added = ledger.catch_up(state.global_step)
        if added:
            logger.warning(
                "resumed at step %d: accounted %d earlier steps at the current (σ, q)", state.global_step, added
            )
        budget = trainer.dp_budget()
        if budget is None:
            trainer._dp_step_limit = None
            return control
        remaining = max(state.max_steps - state.global_step, 0)
        allowed = ledger.steps_within(budget, remaining)
        if allowed == 0 and remaining > 0:
            raise ValueError(
                f"the privacy budget ε={budget} allows no further step: ε is {ledger.epsilon():.4g} and would be "
                f"{ledger.epsilon(1):.4g} after one more; raise max_epsilon / target_epsilon or build a new trainer"
            )
        trainer._dp_step_limit = ledger.steps + allowed
        return control

    def on_step_end(self, args, state, control, **kwargs):
        limit = self.trainer._dp_step_limit
        if limit is not None and self.trainer._dp_ledger.steps >= limit and state.global_step < state.max_steps:
            logger.warning(
                "stopping at step %d: one more step would exceed the privacy budget ε=%s (ε now %.4g)",
                state.global_step,
                self.trainer.dp_budget(),
                self.trainer.dp_epsilon(),
            )
            control.should_training_stop = True
        return control


def _is_hf_dataset(dataset: Any) -> bool:
    if not is_datasets_available():
        return False
    import datasets

    return isinstance(dataset, datasets.Dataset)


def _check_supported(trainer: Trainer) -> None:
    """Refuse setups whose gradients or sampling DPTrainer cannot keep private, saying why."""
    args = trainer.args
    problems = []
    if trainer.model is None:
        problems.append("a model is required (model_init / hyperparameter search is not supported)")
    if trainer.train_dataset is None or not hasattr(trainer.train_dataset, "__len__"):
        problems.append("train_dataset must be a sized dataset: the sample rate depends on its length")
    if args.world_size > 1 or args.n_gpu > 1:
        problems.append("multi-process / multi-GPU training is not supported; run a single process on one device")
    if args.gradient_checkpointing:
        problems.append("gradient_checkpointing re-runs forwards inside backward, which corrupts Opacus' hooks")
    if args.torch_compile:
        problems.append("torch_compile is not supported with Opacus hooks")
    if args.auto_find_batch_size:
        problems.append("auto_find_batch_size would change the sample rate mid-run; set the batch size yourself")
    if args.fp16:
        problems.append("fp16 loss scaling is not supported; use fp32 or bf16")
    if args.label_smoothing_factor:
        problems.append("label smoothing is not supported: override compute_per_sample_loss instead")
    if trainer.compute_loss_func is not None:
        problems.append("compute_loss_func is not used by DP training: override compute_per_sample_loss instead")
    if problems:
        raise ValueError("DPTrainer cannot run this setup:\n  - " + "\n  - ".join(problems))
