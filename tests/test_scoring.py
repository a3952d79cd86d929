"""score_tokens: exact statistics, invariance to batching/chunking, no side effects, clear errors."""

import pytest
import torch

from mia_guard import CanarySet, score_tokens
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.scoring.statistics import StatisticsWorkspace, logit_statistics
from mia_guard.scoring.token_stats import STAT_FIELDS


@pytest.fixture(scope="module")
def setup():
    model = tiny_gpt2(seed=1, n_positions=96).eval()
    tok = byte_tokenizer()
    texts = [f"def f{i}(x):\n    return x * {i}" + " + 1" * (i % 5) for i in range(13)]
    return model, tok, CanarySet.from_texts(texts, seed=0)


def _direct_stats(model, ids, start, end):
    """Statistics from full float64 log-softmax of the model's logits (independent computation)."""
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    t = torch.arange(start, end)
    target = logp[t - 1, torch.tensor(ids)[t]]
    p = logp.exp()[t - 1]
    entropy = -(p * logp[t - 1]).sum(-1)
    std = ((p * logp[t - 1] ** 2).sum(-1) - entropy**2).sqrt()
    conf = target - torch.log1p(-target.exp())
    return {"nll": -target, "entropy": entropy, "logp_std": std, "confidence": conf}


def test_statistics_equal_direct_computation(setup):
    model, tok, canaries = setup
    stats = score_tokens(model, canaries, tok)
    enc = encode_canaries(canaries, tok)
    for i in (0, 7, 12):
        expected = _direct_stats(model, enc.input_ids[i], enc.start[i], enc.end[i])
        n = int(enc.end[i] - enc.start[i])
        assert stats.mask[i].sum() == n
        for name, value in expected.items():
            assert torch.allclose(stats.field(name)[i, :n].double(), value, atol=2e-5), name


@pytest.mark.parametrize("batch_size,chunk_size", [(1, 1), (3, 2), (5, None), (64, 7)])
def test_batch_and_chunk_size_do_not_change_statistics(setup, batch_size, chunk_size):
    model, tok, canaries = setup
    reference = score_tokens(model, canaries, tok)
    other = score_tokens(model, canaries, tok, batch_size=batch_size, chunk_size=chunk_size)
    assert torch.equal(reference.mask, other.mask)
    for name in STAT_FIELDS:
        assert torch.allclose(reference.field(name), other.field(name), atol=1e-5), name


def test_plain_callable_model_matches_hf_fast_path(setup):
    model, tok, canaries = setup
    enc = encode_canaries(canaries, tok)
    fast = score_tokens(model, enc)
    plain = score_tokens(lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits, enc, batch_size=4)
    for name in STAT_FIELDS:
        assert torch.allclose(fast.field(name), plain.field(name), atol=1e-5), name


def test_confidence_is_stable_when_probability_is_near_one():
    logits = torch.tensor([[40.0, 0.0, 0.0, 0.0]])
    stats = logit_statistics(logits, torch.tensor([0]), StatisticsWorkspace(1, 4, torch.device("cpu")))
    # log p - log(1-p) = 40 - log(3) exactly in the limit; naive log1p(-p) gives inf
    assert torch.isfinite(stats["confidence"]).all()
    assert stats["confidence"].item() == pytest.approx(40 - torch.log(torch.tensor(3.0)).item(), abs=1e-4)


def test_scoring_leaves_model_modes_and_rng_untouched(setup):
    _, tok, canaries = setup
    model = tiny_gpt2(seed=2, dropout=0.1)
    model.train()
    model.transformer.h[0].eval()  # mixed modes must come back exactly
    modes = [m.training for m in model.modules()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    stats_a = score_tokens(model, canaries, tok)
    stats_b = score_tokens(model, canaries, tok)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(stats_a.nll, stats_b.nll)  # dropout was off during scoring
    assert all(p.grad is None for p in model.parameters())


def test_tokenizer_padding_side_and_missing_pad_token_do_not_matter(setup):
    model, tok, canaries = setup

    class NoPadTokenizer:  # a minimal tokenizer with no pad token and no padding support
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [b + 3 for b in text.encode("utf-8")]}

    left = byte_tokenizer()
    left.padding_side = "left"
    a = score_tokens(model, canaries, NoPadTokenizer())
    b = score_tokens(model, canaries, left)
    # ByT5 appends EOS (not scored); both score the same text tokens
    assert torch.allclose(a.nll, b.nll, atol=1e-5)


def test_clear_errors(setup):
    model, tok, _ = setup
    long = CanarySet.from_texts(["x" * 200, "yy"], seed=0)
    with pytest.raises(ValueError, match="model's context is 96"):
        score_tokens(model, long, tok)
    one_char = CanarySet.from_texts(["a", "b"], seed=0)

    def plain(text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    with pytest.raises(ValueError, match="no scored tokens"):
        score_tokens(model, one_char, plain)
    with pytest.raises(ValueError, match="need a tokenizer"):
        score_tokens(model, one_char)
    tokens = CanarySet.from_token_ids([[3, 4, 5], [6, 7, 8]], seed=0)
    with pytest.raises(TypeError, match=r"logits of shape \[batch, tokens, vocab\]"):
        score_tokens(lambda ids, mask: ids.float(), tokens)


def test_statistics_at_a_real_vocabulary_equal_float64_through_the_head_shortcut():
    from transformers import LlamaConfig, LlamaForCausalLM

    from mia_guard.scoring.forward import _verified_head

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # a spread of logits like a trained model's, not a flat one
    sequences = [[int(t) for t in torch.randint(0, 49152, (n,))] for n in (9, 17, 12)]
    canaries = CanarySet.from_token_ids(sequences, seed=0)
    assert _verified_head(model, encode_canaries(canaries), torch.device("cpu")) is not None
    stats = score_tokens(model, canaries, batch_size=2, chunk_size=5)
    for i, ids in enumerate(sequences):
        expected = _direct_stats(model, ids, 1, len(ids))
        for name, value in expected.items():
            error = (stats.field(name)[i, : len(ids) - 1].double() - value).abs().max().item()
            assert error < 2e-5, (name, error)


def test_progress_moves_with_every_chunk_inside_one_batch(setup):
    from mia_guard.scoring.forward import _audit_mode, _pad, _ScoredPositions, _Scorer

    model, tok, canaries = setup
    encoded = encode_canaries(canaries, tok)
    updates = []

    class Recorder:
        def update(self, n):
            updates.append(n)

    rows = torch.arange(len(encoded)).numpy()
    with _audit_mode(model, torch.device("cpu")):
        scorer = _Scorer(model, encoded, torch.device("cpu"), 16, Recorder())
        ids, attention = _pad(encoded, rows, torch.device("cpu"))
        scorer.add_batch(ids, attention, _ScoredPositions.of_batch(encoded, rows, ids))  # one batch of 13
        scorer.flush()
    total = int(encoded.num_scored.sum())
    assert len(updates) == -(-total // 16) > 10 and sum(updates) == total
