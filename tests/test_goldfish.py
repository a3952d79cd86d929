"""Goldfish loss: hashed-context token dropping, collator semantics, and its effect on training."""

import pytest
import torch
from transformers import ByT5Tokenizer, DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel

from mia_guard.defenses.goldfish import GoldfishCollator, goldfish_mask, goldfish_supervised_mask

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return ByT5Tokenizer(extra_ids=0)


def _random_ids(shape, seed=0, vocab=259):
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [2, 4, 8])
def test_drop_rate_is_one_over_k(k):
    ids = _random_ids((32, 1024))
    dropped = (~goldfish_mask(ids, k=k, h=13, key=0)).float().mean().item()
    # 32768 positions: binomial sd of the rate <= 0.003, allow 5 sd
    assert abs(dropped - 1 / k) < 0.015


def test_mask_depends_only_on_the_h_preceding_tokens():
    h = 13
    ids = _random_ids((1, 200), seed=1)
    base = goldfish_mask(ids, k=4, h=h, key=0)[0]
    changed = ids.clone()
    j = 100
    changed[0, j] = (changed[0, j] + 1) % 259
    after = goldfish_mask(changed, k=4, h=h, key=0)[0]
    assert torch.equal(base[: j + 1], after[: j + 1])  # position j's own token is not its context
    assert torch.equal(base[j + h + 1 :], after[j + h + 1 :])  # context window has moved past j
    assert not torch.equal(base[j + 1 : j + h + 1], after[j + 1 : j + h + 1])


def test_repeated_passage_drops_the_same_tokens_in_any_context():
    h = 13
    passage = _random_ids((120,), seed=2)
    doc = torch.cat([_random_ids((37,), seed=3), passage, _random_ids((11,), seed=4), passage])
    mask = goldfish_mask(doc.unsqueeze(0), k=4, h=h, key=0)[0]
    first = mask[37 + h : 37 + 120]
    second = mask[37 + 120 + 11 + h : 37 + 120 + 11 + 120]
    assert torch.equal(first, second)
    assert (~first).any()


def test_key_selects_a_different_mask_and_is_reproducible():
    ids = _random_ids((4, 300), seed=5)
    assert torch.equal(goldfish_mask(ids, 4, 13, key=7), goldfish_mask(ids.clone(), 4, 13, key=7))
    agreement = (goldfish_mask(ids, 4, 13, key=7) == goldfish_mask(ids, 4, 13, key=8)).float().mean().item()
    # independent masks with drop rate 1/4 agree on ~ (3/4)^2 + (1/4)^2 = 0.625 of positions
    assert agreement < 0.8


def test_sequence_start_is_dropped_at_rate_one_over_k_and_left_padding_is_invariant():
    h, k = 13, 4
    ids = _random_ids((4000, h), seed=6)
    start_rate = (~goldfish_mask(ids, k, h, 0)[:, 1:]).float().mean().item()
    assert abs(start_rate - 1 / k) < 0.02

    pad = torch.zeros((ids.shape[0], 5), dtype=torch.long)
    left_padded = torch.cat([pad, ids], dim=1)
    attention = torch.cat([torch.zeros_like(pad), torch.ones_like(ids)], dim=1)
    padded_mask = goldfish_mask(left_padded, k, h, 0, attention_mask=attention)
    assert torch.equal(padded_mask[:, 5:], goldfish_mask(ids, k, h, 0))


def test_supervised_mask_for_audits(tokenizer):
    canary = tokenizer("My secret number is 493-221-8876")["input_ids"]
    sup = goldfish_supervised_mask(canary, k=3, h=5, key=1)
    full = goldfish_mask(torch.tensor([canary]), k=3, h=5, key=1)[0]
    assert sup.dtype == torch.bool and sup.shape == (len(canary),)
    assert not sup[0]  # the first token is never predicted
    assert torch.equal(sup[1:], full[1:])

    prefixed = goldfish_supervised_mask(canary, k=3, h=5, key=1, prefix_ids=[7, 8, 9])
    whole = goldfish_mask(torch.tensor([[7, 8, 9] + canary]), k=3, h=5, key=1)[0, 3:]
    assert torch.equal(prefixed, whole)
    assert torch.equal(prefixed[5:], sup[5:])  # past the first h tokens the prefix is irrelevant


def test_collator_matches_hf_lm_collator_except_dropped_positions(tokenizer):
    texts = ["def f(x):\n    return x * 2\n", "import os", "class A:\n    pass\n" * 3]
    features = [tokenizer(t) for t in texts]
    plain = DataCollatorForLanguageModeling(tokenizer, mlm=False)(features)
    batch = GoldfishCollator(tokenizer, k=3, h=4, key=0)(features)

    assert torch.equal(batch["input_ids"], plain["input_ids"])
    assert torch.equal(batch["attention_mask"], plain["attention_mask"])
    keep = goldfish_mask(batch["input_ids"], 3, 4, 0, batch["attention_mask"])
    expected = plain["labels"].masked_fill(~keep, -100)
    assert torch.equal(batch["labels"], expected)
    real = plain["attention_mask"].bool()
    assert (batch["labels"][real] == -100).any()
    assert (batch["labels"][~real] == -100).all()

    # an auditor recomputes the same supervised positions from the canary alone
    ids = features[2]["input_ids"]
    sup = goldfish_supervised_mask(ids, k=3, h=4, key=0)
    assert torch.equal(batch["labels"][2, 1 : len(ids)] != -100, sup[1:])


def test_pad_id_collator_keeps_prompt_labels_and_agrees_with_tokenizer_collator(tokenizer):
    features = [tokenizer(t) for t in ["a short one", "a somewhat longer training text"]]
    by_id = GoldfishCollator(tokenizer.pad_token_id, k=4, h=6, key=3)(
        [{"input_ids": f["input_ids"]} for f in features]
    )
    by_tok = GoldfishCollator(tokenizer, k=4, h=6, key=3)(features)
    for name in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(by_id[name], by_tok[name])

    ids = features[1]["input_ids"]
    prompt_labels = [-100] * 10 + ids[10:]
    batch = GoldfishCollator(tokenizer.pad_token_id, k=4, h=6, key=3)([{"input_ids": ids, "labels": prompt_labels}])
    assert (batch["labels"][0, :10] == -100).all()
    assert torch.equal(batch["labels"][0, 10:], by_tok["labels"][1, 10:])  # prompt tokens still shape the mask
    assert torch.equal(
        batch["labels"][0, 10:] != -100, goldfish_supervised_mask(ids, 4, 6, 3)[10:]
    )


def test_model_loss_counts_only_supervised_tokens(tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=259, n_positions=128,
                                       bos_token_id=1, eos_token_id=1)).eval()
    batch = GoldfishCollator(tokenizer, k=2, h=3, key=0)([tokenizer("goldfish forget what they never learned")])
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[0, :-1], batch["labels"][0, 1:]
    kept = labels != -100
    manual = torch.nn.functional.cross_entropy(logits[kept], labels[kept])
    assert torch.allclose(out.loss, manual, atol=1e-6)


def test_training_with_goldfish_does_not_learn_dropped_tokens(tokenizer):
    """Train on one random string many times: supervised tokens are memorized, dropped ones are not."""
    torch.manual_seed(0)
    secret = "".join(chr(c) for c in torch.randint(97, 123, (48,), generator=torch.Generator().manual_seed(9)).tolist())
    batch = GoldfishCollator(tokenizer, k=3, h=4, key=0)([tokenizer(secret)])
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=259, n_positions=64, bos_token_id=1,
                   eos_token_id=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
    targets = batch["input_ids"][0, 1:]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    sup = goldfish_supervised_mask(batch["input_ids"][0], k=3, h=4, key=0)[1:]
    assert nll[sup].mean() < 0.2
    assert nll[~sup].mean() > 1.5


@pytest.mark.parametrize("kwargs", [{"k": 1}, {"k": 2.5}, {"h": 0}, {"key": "a"}])
def test_invalid_parameters_are_rejected(kwargs):
    params = {"k": 4, "h": 13, "key": 0, **kwargs}
    with pytest.raises(ValueError):
        goldfish_mask(torch.zeros((1, 5), dtype=torch.long), **params)


def test_rejects_non_integer_ids_and_wrong_rank():
    with pytest.raises(ValueError, match="integer"):
        goldfish_mask(torch.zeros((1, 5)), 4, 13, 0)
    with pytest.raises(ValueError, match="2-D"):
        goldfish_mask(torch.zeros(5, dtype=torch.long), 4, 13, 0)


def test_trainer_uses_the_collator(tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=259, n_positions=128,
                                       bos_token_id=1, eos_token_id=1))
    texts = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n"] * 4
    dataset = [dict(tokenizer(t)) for t in texts]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2,
                             report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", seed=0)
    collator = GoldfishCollator(tokenizer, k=3, h=4, key=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    batch = next(iter(trainer.get_train_dataloader()))
    keep = goldfish_mask(batch["input_ids"], 3, 4, 0, batch["attention_mask"])
    assert (batch["labels"][~keep] == -100).all()
    assert (batch["labels"][keep & batch["attention_mask"].bool()] != -100).all()
    assert trainer.train().training_loss > 0


def test_scored_mask_aligns_with_token_stats(tokenizer):
    from mia_guard.canaries.canary_set import CanarySet
    from mia_guard.canaries.encoding import encode_canaries
    from mia_guard.defenses.goldfish import goldfish_scored_mask
    from mia_guard.scoring.forward import score_tokens

    encoded = encode_canaries(CanarySet.generate(12, seed=0), tokenizer)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=259, n_positions=64,
                                       bos_token_id=1, eos_token_id=1))
    stats = score_tokens(model, encoded)
    mask = goldfish_scored_mask(encoded, k=3, h=6, key=2)
    assert mask.shape == stats.mask.shape
    assert not (mask & ~stats.mask).any()  # only scored positions can be supervised
    for i, ids in enumerate(encoded.input_ids):
        start, end = int(encoded.start[i]), int(encoded.end[i])
        assert torch.equal(mask[i, : end - start], goldfish_supervised_mask(ids, 3, 6, 2)[start:end])
    assert mask[stats.mask].any() and (~mask[stats.mask]).any()
