"""DP-SGD in the Hugging Face Trainer: real Opacus, real Trainer, a tiny byte-level GPT-2."""

from __future__ import annotations

import json

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.validators import ModuleValidator
from transformers import TrainerCallback, TrainingArguments

from mia_guard.defenses.dp import (
    DPConfig,
    DPIncompatibleModelError,
    DPTrainer,
    PrivacyLedger,
    attach_grad_sample_hooks,
    causal_lm_per_sample_loss,
    detach_grad_sample_hooks,
    dp_forward_inputs,
    opacus_hooks_disabled,
    unwrap_dp_model,
    validate_for_dp,
)
from mia_guard.defenses.dp.clipping import PerSampleClipper
from mia_guard.defenses.dp.sampling import PoissonMicroBatchSampler, split_evenly
from mia_guard.experiments.demo_assets import CausalLMCollator, tiny_gpt2

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def byte_rows(n: int = 40, seed: int = 0) -> list[dict]:
    """``n`` rows of 8-24 random byte ids (3..258), lengths varying so batches are padded."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 25, (n,), generator=g).tolist()
    return [{"input_ids": torch.randint(3, 259, (k,), generator=g).tolist()} for k in lengths]


def gpt2(tie: bool = True):
    model = tiny_gpt2(n_positions=64, seed=0)
    if not tie:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.transformer.wte.weight.detach().clone())
    return model


def make_trainer(tmp_path, dp_config, *, rows=None, model=None, batch=4, accumulation=2, max_steps=6, **kwargs):
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=max_steps,
        learning_rate=kwargs.pop("learning_rate", 5e-3),
        logging_steps=kwargs.pop("logging_steps", 2),
        report_to=kwargs.pop("report_to", []),
        save_strategy=kwargs.pop("save_strategy", "no"),
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **kwargs,
    )
    return DPTrainer(
        model=model if model is not None else gpt2(),
        args=args,
        train_dataset=rows if rows is not None else byte_rows(),
        data_collator=CausalLMCollator(),
        dp_config=dp_config,
    )


def independent_epsilon(mechanism: str, sigma: float, rate: float, steps: int, delta: float) -> float:
    accountant = {"rdp": RDPAccountant, "prv": PRVAccountant}[mechanism]()
    accountant.history = [(sigma, rate, steps)]
    return accountant.get_epsilon(delta=delta)


# ---- training through the Trainer ------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_dp_run_trains_and_reports_the_accountants_epsilon(tmp_path, accountant):
    model = gpt2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = make_trainer(
        tmp_path, DPConfig(noise_multiplier=1.1, accountant=accountant), model=model, logging_steps=3, max_steps=6
    )
    result = trainer.train()

    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    rate = 8 / 40
    logged = [(h["step"], h["dp/epsilon"]) for h in trainer.state.log_history if "loss" in h]
    assert [step for step, _ in logged] == [3, 6]
    for step, eps in logged:
        assert eps == pytest.approx(independent_epsilon(accountant, 1.1, rate, step, 1 / 400), rel=1e-9)
    assert trainer.dp_epsilon() == logged[-1][1]
    summary = json.loads(json.dumps(trainer.dp_summary()))  # JSON-able, for the audit report
    assert summary["history"] == [[1.1, rate, 6]] and summary["delta"] == 1 / 400 and summary["steps"] == 6


def test_epsilon_lands_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(
        tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp"), report_to=["tensorboard"], max_steps=4
    )
    trainer.train()
    events = EventAccumulator(str(next((tmp_path / "out").rglob("events.out.tfevents*")).parent))
    events.Reload()
    scalars = events.Scalars("train/dp/epsilon")
    assert sorted({s.step for s in scalars}) == [2, 4]  # every logging step (and the end-of-training summary)
    assert scalars[-1].value == pytest.approx(trainer.dp_epsilon(), rel=1e-6)


@pytest.mark.parametrize("mode,tie", [("functorch", True), ("ghost", False)])
def test_other_grad_sample_modes_train(tmp_path, mode, tie):
    model = gpt2(tie=tie)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = make_trainer(
        tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp", grad_sample_mode=mode), model=model, max_steps=2
    )
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss)) and trainer.dp_summary()["steps"] == 2
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_ghost_mode_refuses_tied_embeddings_and_says_how_to_untie(tmp_path):
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        make_trainer(tmp_path, DPConfig(noise_multiplier=1.0, grad_sample_mode="ghost"))


def test_target_epsilon_picks_noise_that_reaches_it_and_caps_training(tmp_path):
    trainer = make_trainer(tmp_path, DPConfig(target_epsilon=3.0, accountant="rdp"), max_steps=6)
    trainer.train()
    sigma = trainer.dp_summary()["noise_multiplier"]
    assert trainer.state.global_step == 6
    assert 3.0 - 0.05 <= trainer.dp_epsilon() <= 3.0
    assert trainer.dp_epsilon() == pytest.approx(independent_epsilon("rdp", sigma, 0.2, 6, 1 / 400), rel=1e-9)
    with pytest.raises(ValueError, match="allows no further step"):
        trainer.train()  # a second run on the same data would spend more than the target


def test_max_epsilon_stops_before_the_budget_is_exceeded(tmp_path):
    eps = [independent_epsilon("rdp", 1.0, 0.2, t, 1 / 400) for t in (5, 6)]
    budget = (eps[0] + eps[1]) / 2  # allows 5 steps, not 6
    trainer = make_trainer(tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp", max_epsilon=budget), max_steps=20)
    trainer.train()
    assert trainer.state.global_step == 5
    assert trainer.dp_epsilon() == pytest.approx(eps[0], rel=1e-9) and trainer.dp_epsilon() <= budget


def test_max_epsilon_below_one_step_is_refused(tmp_path):
    tiny = independent_epsilon("rdp", 1.0, 0.2, 1, 1 / 400) / 2
    trainer = make_trainer(tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp", max_epsilon=tiny))
    with pytest.raises(ValueError, match="allows no further step"):
        trainer.train()


class _Counter(TrainerCallback):
    def __init__(self):
        self.steps = self.substeps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_substep_end(self, args, state, control, **kwargs):
        self.substeps += 1


def test_gradient_accumulation_is_one_noisy_step_per_logical_batch(tmp_path):
    # N=36, B=2, k=3: L=6, q=1/6, an epoch is 6 logical batches of 3 micro-batches each
    trainer = make_trainer(
        tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp"), rows=byte_rows(36), batch=2, accumulation=3,
        max_steps=-1, num_train_epochs=1,
    )
    counter = _Counter()
    trainer.add_callback(counter)
    trainer.train()
    assert trainer.state.global_step == 6 and counter.steps == 6 and counter.substeps == 6 * 2
    summary = trainer.dp_summary()
    assert summary["history"] == [[1.0, 6 / 36, 6]] and summary["logical_batch_size"] == 6


def test_a_logical_batch_updates_by_the_sum_of_its_examples_gradients_over_L(tmp_path):
    # plain SGD, lr 1, no clipping in effect, negligible noise: one step must move the
    # weights by -(Σ_i ∇ℓ_i) / L over the examples Poisson drew, whatever the micro-batching
    rows = byte_rows()
    config = DPConfig(noise_multiplier=1e-9, max_grad_norm=100.0, accountant="rdp")
    trainer = make_trainer(
        tmp_path, config, rows=rows, batch=2, accumulation=2, max_steps=1, optim="sgd", learning_rate=1.0,
        weight_decay=0.0, lr_scheduler_type="constant",
    )
    micro = list(trainer.get_train_dataloader().batch_sampler)[:2]
    drawn = [i for part in micro for i in part]
    assert drawn  # the seeded draw is not empty
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    truth = individual_gradients(gpt2(), CausalLMCollator()([rows[i] for i in drawn]))
    norms = torch.cat([g.flatten(1) for g in truth.values()], dim=1).norm(dim=1)
    assert (norms < 100.0).all()  # so clipping leaves every example's gradient as is
    for (name, _), start, p in zip(trainer.model.named_parameters(), before, trainer.model.parameters()):
        torch.testing.assert_close(p.detach() - start, -truth[name].sum(0) / 4, rtol=1e-3, atol=1e-6, msg=name)


def test_without_poisson_sampling_the_trainers_batches_are_accounted(tmp_path):
    # N=40, B=4, k=2: the Trainer's 10 shuffled batches make 5 steps, accounted at q = 8/40
    trainer = make_trainer(
        tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp", poisson_sampling=False), max_steps=-1,
        num_train_epochs=1,
    )
    trainer.train()
    assert trainer.state.global_step == 5 and trainer.dp_summary()["history"] == [[1.0, 0.2, 5]]


def test_resuming_from_a_checkpoint_keeps_counting_epsilon(tmp_path):
    config = DPConfig(noise_multiplier=1.0, accountant="rdp")
    make_trainer(tmp_path, config, max_steps=4, save_strategy="steps", save_steps=2).train()
    resumed = make_trainer(tmp_path, config, max_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert resumed.state.global_step == 4 and resumed.dp_summary()["steps"] == 4
    assert resumed.dp_epsilon() == pytest.approx(independent_epsilon("rdp", 1.0, 0.2, 4, 1 / 400), rel=1e-9)


def test_empty_poisson_batches_take_a_noise_only_step(tmp_path):
    # q = 1/40: many logical batches are empty; they must still be noisy, accounted steps
    config = DPConfig(noise_multiplier=1.0, accountant="rdp")
    trainer = make_trainer(tmp_path, config, batch=1, accumulation=1, max_steps=12)
    sizes = [len(b) for b in trainer.get_train_dataloader().batch_sampler][:12]
    assert 0 in sizes  # the same seeded draw the run will make
    params = list(trainer.model.parameters())
    trainer.train()
    assert trainer.state.global_step == 12 and trainer.dp_summary()["steps"] == 12
    assert all(torch.isfinite(p).all() for p in params)


def test_incompatible_module_gives_the_validator_message_and_the_fix(tmp_path):
    model = gpt2()
    model.transformer.h[0].ln_1 = torch.nn.BatchNorm1d(64)
    with pytest.raises(DPIncompatibleModelError) as info:
        make_trainer(tmp_path, DPConfig(noise_multiplier=1.0), model=model)
    message = str(info.value)
    assert "BatchNorm cannot support training with differential privacy" in message
    assert "ModuleValidator.fix" in message
    validate_for_dp(ModuleValidator.fix(model))  # the advised fix is enough


def test_config_rejects_ambiguous_noise_and_ew_mode():
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig()
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig(target_epsilon=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="'ew'"):
        DPConfig(noise_multiplier=1.0, grad_sample_mode="ew")
    assert DPConfig(noise_multiplier=1.0).resolve_delta(50) == pytest.approx(1 / 500)


# ---- per-sample gradients and clipping, one manual step -----------------------------------------


def padded_batch():
    rows = [{"input_ids": list(range(3, 3 + n))} for n in (12, 7, 20)]
    return CausalLMCollator()(rows)


def individual_gradients(model, batch):
    """Each row's gradient from its own backward pass, {name: [rows, *shape]}."""
    grads = {n: [] for n, _ in model.named_parameters()}
    for i in range(batch["input_ids"].shape[0]):
        model.zero_grad(set_to_none=True)
        row = {k: v[i : i + 1] for k, v in batch.items()}
        causal_lm_per_sample_loss(model(**dp_forward_inputs(model, row)).logits, row["labels"]).sum().backward()
        for n, p in model.named_parameters():
            grads[n].append(p.grad.detach().clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(g) for n, g in grads.items()}


def test_per_sample_gradients_are_exact_with_tied_embeddings_and_conv1d():
    model = gpt2().train()
    batch = padded_batch()
    hooks = attach_grad_sample_hooks(model, mode="hooks", max_grad_norm=1.0)
    per_sample = causal_lm_per_sample_loss(model(**dp_forward_inputs(model, batch)).logits, batch["labels"])
    per_sample.sum().backward()  # DPTrainer's convention: hooks in "sum" mode
    opacus = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    hooks.disable_hooks()
    truth = individual_gradients(model, batch)
    assert model.lm_head.weight is model.transformer.wte.weight
    for name, grad in truth.items():
        torch.testing.assert_close(opacus[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("mode,tie,prune", [("hooks", True, True), ("hooks", True, False), ("ghost", False, True)])
def test_each_example_is_clipped_to_max_grad_norm(mode, tie, prune):
    clip = 0.05  # below every raw per-example norm here
    model = gpt2(tie=tie).train()
    batch = padded_batch()
    truth = individual_gradients(model, batch)
    hooks = attach_grad_sample_hooks(model, mode=mode, max_grad_norm=clip)
    cls = DPOptimizerFastGradientClipping if mode == "ghost" else DPOptimizer
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer = cls(sgd, noise_multiplier=1.0, max_grad_norm=clip, expected_batch_size=3)
    clipper = PerSampleClipper(model, hooks, optimizer, prune_backward=prune)

    names = [n for n, _ in model.named_parameters()]
    raw_norms = torch.stack([torch.cat([truth[n][i].flatten() for n in names]).norm() for i in range(3)])
    assert (raw_norms > clip).all()
    for i in range(3):  # one example per physical batch: its clipped gradient alone
        row = {k: v[i : i + 1] for k, v in batch.items()}
        clipper.backward(causal_lm_per_sample_loss(model(**dp_forward_inputs(model, row)).logits, row["labels"]))
        summed = torch.cat([p.summed_grad.flatten() for p in model.parameters()])
        assert summed.norm() <= clip * (i + 1) + 1e-6
        clipper.release()
    # the whole batch in one physical batch: Σ_i clip(g_i)
    clipper.backward(causal_lm_per_sample_loss(model(**dp_forward_inputs(model, batch)).logits, batch["labels"]))
    factors = (clip / (raw_norms + 1e-6)).clamp(max=1.0)
    for name, p in model.named_parameters():
        expected = torch.einsum("i,i...->...", factors, truth[name])
        torch.testing.assert_close(p.summed_grad, expected, rtol=1e-3, atol=1e-7, msg=name)


class _SideInputModel(torch.nn.Module):
    """Token embedding plus a layer on a float side input that never passes the embedding."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.side = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, ids, extra):
        return self.head(self.embed(ids).mean(1) + self.side(extra)).squeeze(-1)


@pytest.mark.parametrize("prune", [True, False])
def test_pruned_backward_reports_parameters_it_cannot_reach(prune):
    model = _SideInputModel()
    hooks = attach_grad_sample_hooks(model, mode="hooks", max_grad_norm=1.0)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer = DPOptimizer(sgd, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=2)
    clipper = PerSampleClipper(model, hooks, optimizer, prune_backward=prune)
    loss = model(torch.tensor([[1, 2], [3, 4]]), torch.randn(2, 3)) ** 2
    if prune:
        with pytest.raises(RuntimeError, match=r"side\.weight.*prune_backward=False"):
            clipper.backward(loss)
    else:
        clipper.backward(loss)
        assert all(p.summed_grad is not None for p in model.parameters())


# ---- running the model between steps (the audit callback) ---------------------------------------


def test_no_grad_eval_forward_between_steps_leaves_per_sample_gradients_unchanged():
    batch, other = padded_batch(), CausalLMCollator()([{"input_ids": list(range(5, 40))}] * 5)

    def grad_samples(interleave):
        model = gpt2().train()
        attach_grad_sample_hooks(model, mode="hooks", max_grad_norm=1.0)
        interleave(model)
        per_sample = causal_lm_per_sample_loss(model(**dp_forward_inputs(model, batch)).logits, batch["labels"])
        per_sample.sum().backward()
        return [p.grad_sample.clone() for p in model.parameters()]

    def audit_no_grad(model):
        model.eval()
        with torch.no_grad():
            model(**dp_forward_inputs(model, other))
        model.train()

    def audit_with_grad_inside_context(model):
        with opacus_hooks_disabled(model) as plain:
            plain(**dp_forward_inputs(plain, other)).logits.sum()
        assert not any(getattr(m, "activations", None) for m in model.modules())

    reference = grad_samples(lambda model: None)
    for audit in (audit_no_grad, audit_with_grad_inside_context):
        for got, want in zip(grad_samples(audit), reference):
            assert torch.equal(got, want)


class _AuditLikeCallback(TrainerCallback):
    """What the audit callback does: eval-mode no-grad forwards of canaries after a step."""

    def __init__(self, rows):
        self.batch = CausalLMCollator()(rows)
        self.calls = 0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        with opacus_hooks_disabled(model) as plain:
            was_training = plain.training
            plain.eval()
            with torch.no_grad():
                plain(**self.batch)
            plain.train(was_training)
        self.calls += 1


def test_audit_callback_in_a_dp_run_changes_nothing(tmp_path):
    def run(with_audit):
        model = gpt2()
        trainer = make_trainer(tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp"), model=model, max_steps=4)
        if with_audit:
            audit = _AuditLikeCallback(byte_rows(6, seed=1))
            trainer.add_callback(audit)
        trainer.train()
        if with_audit:
            assert audit.calls == 4
        assert unwrap_dp_model(trainer.model) is model
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(True), run(False)):
        assert torch.equal(a, b)


def test_audit_callback_switches_off_the_dp_trainers_hooks_during_its_forwards(tmp_path):
    """The real MIAAuditCallback inside a DPTrainer run: every audit forward (eval mode) runs
    with the trainer's in-place Opacus hooks off, every training forward with them on."""
    from trainer_runs import canaries

    from mia_guard.callbacks import MIAAuditCallback
    from mia_guard.experiments.demo_assets import byte_tokenizer
    from mia_guard.scoring.guards import ATTACHED_HOOKS

    model = gpt2()
    trainer = make_trainer(tmp_path, DPConfig(noise_multiplier=1.0, accountant="rdp"), model=model, max_steps=3)
    trainer.add_callback(MIAAuditCallback(canaries(16), byte_tokenizer(), every_n_steps=2, attacks=["loss"],
                                          output_dir=tmp_path / "mia", tensorboard=False, progress=False))
    hooks = ATTACHED_HOOKS[model]
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((module.training, hooks.hooks_enabled)))
    trainer.train()
    audit_forwards = [enabled for training, enabled in seen if not training]
    training_forwards = [enabled for training, enabled in seen if training]
    assert audit_forwards and not any(audit_forwards)  # steps 0, 2 and 3 audited, hooks off each time
    assert training_forwards and all(training_forwards)
    assert hooks.hooks_enabled


def test_detached_model_records_no_per_sample_gradients():
    model = gpt2().train()
    attach_grad_sample_hooks(model, mode="hooks", max_grad_norm=1.0)
    assert detach_grad_sample_hooks(model) is model
    batch = padded_batch()
    causal_lm_per_sample_loss(model(**dp_forward_inputs(model, batch)).logits, batch["labels"]).sum().backward()
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    attach_grad_sample_hooks(model, mode="hooks", max_grad_norm=1.0)  # can be prepared again


def test_unwrap_dp_model_returns_the_hf_model():
    model = gpt2()
    assert unwrap_dp_model(GradSampleModule(model)) is model
    assert unwrap_dp_model(model) is model


# ---- pieces -----------------------------------------------------------------------------------


def test_position_ids_are_batched():
    batch = padded_batch()
    forward = dp_forward_inputs(gpt2(), batch)
    assert "labels" not in forward and forward["use_cache"] is False
    assert torch.equal(forward["position_ids"], torch.arange(20).repeat(3, 1))


def test_poisson_sampler_draws_independent_logical_batches_split_into_micro_batches():
    sampler = PoissonMicroBatchSampler(200, 0.1, micro_batches=3, steps=400, generator=torch.Generator().manual_seed(0))
    lists = list(sampler)
    assert len(lists) == len(sampler) == 1200
    sizes = []
    for step in range(400):
        parts = lists[3 * step : 3 * step + 3]
        logical = [i for part in parts for i in part]
        assert len(set(logical)) == len(logical) and all(0 <= i < 200 for i in logical)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1 and len(parts[-1]) == max(map(len, parts))
        sizes.append(len(logical))
    mean = sum(sizes) / len(sizes)
    assert abs(mean - 20) < 4 * (200 * 0.1 * 0.9 / 400) ** 0.5  # binomial mean within 4 standard errors
    assert split_evenly([1, 2], 3) == [[], [1], [2]]


def test_ledger_catch_up_accounts_resumed_steps_like_recorded_ones():
    resumed = PrivacyLedger(accountant="rdp", noise_multiplier=1.2, sample_rate=0.05, delta=1e-4)
    assert resumed.catch_up(30) == 30
    live = PrivacyLedger(accountant="rdp", noise_multiplier=1.2, sample_rate=0.05, delta=1e-4)
    for _ in range(30):
        live.record_step()
    assert resumed.epsilon() == live.epsilon() == pytest.approx(independent_epsilon("rdp", 1.2, 0.05, 30, 1e-4))
    assert live.steps_within(live.epsilon(10), limit=100) == 10
