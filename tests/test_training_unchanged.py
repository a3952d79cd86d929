"""Auditing changes nothing in training: with audits after every step, the run ends with
bit-identical weights and the same RNG state as the same run (same seed, CPU) without them."""

from __future__ import annotations

import pytest
import torch
from plain_loop_runs import train
from trainer_runs import canaries, make_trainer

from mia_guard.callbacks import AuditLoop, MIAAuditCallback
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2

STEPS = 4


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    b_params = dict(b.named_parameters())
    names = [name for name, _ in a.named_parameters()]
    assert names == list(b_params)
    for name, param in a.named_parameters():
        assert torch.equal(param, b_params[name]), f"{name} differs"


def lora_gpt2(seed: int = 0):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["c_attn"], fan_in_fan_out=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # LoRA's A matrices are drawn at random
        return peft.get_peft_model(tiny_gpt2(n_layer=1, n_embd=32, dropout=0.2, seed=seed), config)


def checkpointing_option() -> dict:
    """Activation (gradient) checkpointing, under the argument name this transformers version uses."""
    from transformers import TrainingArguments

    name = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else (
        "gradient_checkpointing"
    )
    return {name: True}


def checkpointing_on(model: torch.nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


CASES = {
    "dropout": {},
    "gradient_accumulation": {"gradient_accumulation_steps": 2},
    "gradient_checkpointing": checkpointing_option(),
    "lora": {"model": lora_gpt2},
}


@pytest.mark.parametrize("case", list(CASES))
def test_trainer_run_is_bit_identical_with_the_callback(tmp_path, case):
    options = dict(CASES[case])
    build = options.pop("model", None)
    runs = {}
    for audited in (False, True):
        callbacks = [MIAAuditCallback(canaries(), every_n_steps=1, output_dir=tmp_path / "mia", progress=False,
                                      tensorboard=False)] if audited else []
        model = build() if build is not None else None
        trainer = make_trainer(tmp_path / str(audited), callbacks, model=model, max_steps=STEPS, dropout=0.2,
                               **options)
        trainer.train()
        runs[audited] = (trainer.model, torch.random.get_rng_state(), callbacks)
    (plain, plain_rng, _), (audited, audited_rng, (callback,)) = runs[False], runs[True]
    assert callback.history.steps == list(range(STEPS + 1))  # audited before and after every step
    assert_same_weights(audited, plain)
    assert torch.equal(audited_rng, plain_rng)  # the audits drew no random numbers
    assert audited.training == plain.training
    assert checkpointing_on(audited) == (case == "gradient_checkpointing")
    first, last = callback.history.results[0], callback.history.results[-1]
    assert first.member_nll.value != last.member_nll.value  # training did change the model


def test_plain_loop_run_is_bit_identical_with_audits(tmp_path):
    runs = {}
    for audited in (False, True):
        torch.manual_seed(0)  # dropout draws from the global generator
        model = tiny_gpt2(n_layer=1, n_embd=32, dropout=0.2)
        loop = AuditLoop(canaries(), byte_tokenizer(), every_n_steps=1, output_dir=tmp_path / "mia") if audited else None
        train(model, canaries(), STEPS, loop)
        runs[audited] = (model, torch.random.get_rng_state(), loop)
    assert runs[True][2].history.steps == list(range(STEPS + 1))
    assert_same_weights(runs[True][0], runs[False][0])
    assert torch.equal(runs[True][1], runs[False][1])
