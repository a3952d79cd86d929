"""Regularization presets: dropout across HF configs and built models, TrainingArguments kwargs."""

import pytest
import torch
from transformers import (
    BertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    PretrainedConfig,
    T5Config,
    Trainer,
    TrainingArguments,
)

from mia_guard.defenses.regularization import PRESETS, RegularizationPreset, apply_preset, set_dropout

torch.set_num_threads(1)


def _gpt2_config(**kw):
    return GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=259, n_positions=64, bos_token_id=1,
                      eos_token_id=1, **kw)


@pytest.mark.parametrize(
    "config, expected",
    [
        (GPT2Config(), {"resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"}),
        (BertConfig(), {"hidden_dropout_prob", "attention_probs_dropout_prob"}),
        (LlamaConfig(), {"attention_dropout"}),
        (T5Config(), {"dropout_rate", "classifier_dropout"}),
        (OPTConfig(), {"dropout", "attention_dropout"}),
    ],
)
def test_set_dropout_sets_every_dropout_key_of_a_config(config, expected):
    keys = set_dropout(config, 0.25)
    assert set(keys) == expected
    assert all(getattr(config, k) == 0.25 for k in keys)
    if isinstance(config, OPTConfig):
        assert config.layerdrop == 0.0  # drops layers, not activations: left alone


def test_dropout_set_on_config_reaches_the_built_model():
    config = _gpt2_config()
    set_dropout(config, 0.3)
    model = GPT2LMHeadModel(config)
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert ps and all(p == 0.3 for p in ps)


def test_set_dropout_on_a_built_model_changes_its_training_forward():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(_gpt2_config()).train()
    ids = torch.randint(3, 259, (2, 20), generator=torch.Generator().manual_seed(1))

    keys = set_dropout(model, 0.0)
    assert "resid_pdrop" in keys and "module:transformer.drop.p" in keys
    assert model.config.resid_pdrop == 0.0
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert torch.equal(a, b)  # no dropout left: training forward is deterministic

    set_dropout(model, 0.5)
    with torch.no_grad():
        c, d = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert not torch.allclose(c, d)


def test_set_dropout_reaches_float_attributes_read_at_run_time():
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=100, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    keys = set_dropout(model, 0.2)
    assert "module:model.layers.0.self_attn.attention_dropout" in keys
    assert model.model.layers[0].self_attn.attention_dropout == 0.2


def test_set_dropout_errors_when_nothing_is_dropout_like():
    with pytest.raises(ValueError, match="no dropout-like attribute"):
        set_dropout(PretrainedConfig(), 0.1)
    assert set_dropout(PretrainedConfig(), 0.0, allow_missing=True) == []
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        set_dropout(GPT2Config(), 1.0)
    with pytest.raises(TypeError, match="PretrainedConfig"):
        set_dropout({"dropout": 0.1}, 0.1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_fill_training_arguments_and_config(name, tmp_path):
    preset = PRESETS[name]
    given = {"output_dir": str(tmp_path), "learning_rate": 1e-3}
    kwargs, config, keys = apply_preset(name, given, _gpt2_config())
    assert given == {"output_dir": str(tmp_path), "learning_rate": 1e-3}  # caller's dict untouched
    args = TrainingArguments(**kwargs, report_to=[], use_cpu=True)
    assert args.weight_decay == preset.weight_decay
    assert args.label_smoothing_factor == preset.label_smoothing
    assert config.resid_pdrop == config.attn_pdrop == config.embd_pdrop == preset.dropout
    assert "attn_pdrop" in keys


def test_label_smoothing_preset_changes_the_trainer_loss(tmp_path):
    torch.manual_seed(0)
    kwargs, config, _ = apply_preset("label_smoothing", {"output_dir": str(tmp_path)}, _gpt2_config())
    model = GPT2LMHeadModel(config).eval()
    trainer = Trainer(model=model, args=TrainingArguments(**kwargs, report_to=[], use_cpu=True))
    ids = torch.randint(3, 259, (2, 16), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "labels": ids.clone()}
    with torch.no_grad():
        plain = model(**batch).loss
        smoothed = trainer.compute_loss(model, dict(batch))
    assert smoothed.item() != pytest.approx(plain.item(), abs=1e-4)


def test_apply_preset_refuses_to_override_an_explicit_setting(tmp_path):
    with pytest.raises(ValueError, match="weight_decay=0.01"):
        apply_preset("weight_decay", {"output_dir": str(tmp_path), "weight_decay": 0.01}, _gpt2_config())
    # the same value is not a conflict
    kwargs, _, _ = apply_preset("weight_decay", {"weight_decay": 0.1}, _gpt2_config())
    assert kwargs["weight_decay"] == 0.1


def test_custom_and_unknown_presets():
    custom = RegularizationPreset("heavy_dropout", weight_decay=0.0, dropout=0.3, label_smoothing=0.0)
    _, config, _ = apply_preset(custom, {}, _gpt2_config())
    assert config.resid_pdrop == 0.3
    with pytest.raises(ValueError, match="unknown regularization preset"):
        apply_preset("l2", {}, _gpt2_config())
    with pytest.raises(ValueError, match="dropout"):
        RegularizationPreset("bad", 0.0, 1.5, 0.0)
