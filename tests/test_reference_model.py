"""An explicit reference model must be the audited model's architecture, vocabulary and tokenizer."""

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from mia_guard.audit.reference import check_reference_model
from mia_guard.experiments.demo_assets import BYTE_VOCAB_SIZE, byte_tokenizer, tiny_gpt2

from bpe_tokenizer import bpe_tokenizer


def tiny_llama(vocab_size=BYTE_VOCAB_SIZE):
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    return LlamaForCausalLM(config)


def test_same_architecture_passes_also_under_a_peft_wrapper():
    check_reference_model(tiny_gpt2(seed=1), tiny_gpt2(seed=2), tokenizer=byte_tokenizer(),
                          reference_tokenizer=byte_tokenizer())
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(tiny_gpt2(seed=1), peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    check_reference_model(lora, tiny_gpt2(seed=2))


def test_another_architecture_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="reference_model is a LlamaForCausalLM, the audited model a GPT2LMHeadModel.*"
                                         "pass the base model this run started from"):
        check_reference_model(tiny_gpt2(), tiny_llama())
    with pytest.raises(ValueError, match=r"different architecture: config.hidden_size = 32, the audited model's is 64"):
        check_reference_model(tiny_gpt2(), tiny_gpt2(n_embd=32))


def test_another_vocabulary_or_tokenizer_is_refused():
    resized = tiny_gpt2()
    resized.resize_token_embeddings(BYTE_VOCAB_SIZE + 5)
    with pytest.raises(ValueError, match="different vocabulary: config.vocab_size = 264"):
        check_reference_model(tiny_gpt2(), resized)
    with pytest.raises(ValueError, match="is not the training tokenizer"):
        check_reference_model(tiny_gpt2(), tiny_gpt2(), tokenizer=byte_tokenizer(), reference_tokenizer=bpe_tokenizer())
    with pytest.raises(TypeError, match="must be a transformers causal LM"):
        check_reference_model(tiny_gpt2(), lambda ids, mask: None)


def test_callback_refuses_a_wrong_reference_before_the_first_step(tmp_path):
    from transformers import Trainer, TrainingArguments

    from mia_guard import CanarySet, MIAAuditCallback
    from mia_guard.experiments.demo_assets import CausalLMCollator, tokenize

    canaries = CanarySet.generate(16, "code_credential", seed=0)
    tok = byte_tokenizer()
    callback = MIAAuditCallback(canaries, tok, attacks=["loss", "reference"], reference_model=tiny_llama(),
                                tensorboard=False, progress=False, output_dir=tmp_path / "audit")
    trainer = Trainer(model=tiny_gpt2(), args=TrainingArguments(tmp_path / "out", max_steps=2, report_to=[]),
                      train_dataset=tokenize(["x = 1"] * 8, tok, 32), data_collator=CausalLMCollator(),
                      callbacks=[callback])
    with pytest.raises(ValueError, match="reference_model is a LlamaForCausalLM"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_auditor_scores_an_explicit_reference_instead_of_step_0():
    from mia_guard import Auditor, CanarySet

    canaries = CanarySet.generate(40, "code_credential", seed=0)
    base, trained = tiny_gpt2(seed=1), tiny_gpt2(seed=2)
    auditor = Auditor(canaries, byte_tokenizer(), attacks=["reference"], reference_model=base, n_folds=2)
    auditor.audit(trained, step=5)
    expected = Auditor(canaries, byte_tokenizer(), attacks=["loss"]).score(base)
    assert auditor.reference_stats.nll.allclose(expected.nll)
