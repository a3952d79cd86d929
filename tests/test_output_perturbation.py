"""Output perturbation wrapper: what a black-box API user sees of a causal LM."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mia_guard.defenses.output import PerturbedOutputModel

torch.set_num_threads(1)
VOCAB = 259


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, bos_token_id=1,
                        eos_token_id=1)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))


def _raw_logp(model, ids, **kw):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids, **kw).logits, dim=-1)


def test_identity_settings_reproduce_log_softmax_exactly(model, ids):
    with torch.no_grad():
        out = PerturbedOutputModel(model)(input_ids=ids).logits
    assert torch.equal(out, _raw_logp(model, ids))


def test_temperature_scales_logits_and_flattens_the_distribution(model, ids):
    with torch.no_grad():
        raw = model(input_ids=ids).logits
        outs = {t: PerturbedOutputModel(model, temperature=t)(input_ids=ids).logits for t in (0.5, 1.0, 2.0, 1e4)}
    assert torch.allclose(outs[2.0], torch.log_softmax(raw / 2.0, dim=-1), atol=1e-6)
    top = raw.argmax(dim=-1, keepdim=True)
    nll = {t: -out.gather(-1, top).mean().item() for t, out in outs.items()}
    # the most likely token loses probability as the temperature rises, up to uniform
    assert nll[0.5] < nll[1.0] < nll[2.0] < nll[1e4]
    assert nll[1e4] == pytest.approx(math.log(VOCAB), abs=1e-3)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_leaves_exactly_k_tokens_above_the_floor(model, ids, k):
    wrapped = PerturbedOutputModel(model, top_k=k, floor=1e-12)
    with torch.no_grad():
        out = wrapped(input_ids=ids).logits
    raw = _raw_logp(model, ids)
    assert torch.isfinite(out).all()
    above = out > math.log(1e-9)
    assert (above.sum(dim=-1) == k).all()
    assert torch.equal(above, torch.zeros_like(above).scatter_(-1, raw.topk(k, dim=-1).indices, True))
    # kept tokens are renormalised over the top-k mass; the whole row sums to 1
    kept_raw = raw.exp().masked_fill(~above, 0.0)
    assert torch.allclose(out.exp().masked_fill(~above, 0.0), kept_raw / kept_raw.sum(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(out.exp().sum(-1), torch.ones(out.shape[:-1]), atol=1e-6)
    assert out.min().item() == pytest.approx(math.log(1e-12), abs=1e-3)


def test_rounding_with_a_plain_callable():
    probs = torch.tensor([0.52, 0.31, 0.12, 0.04, 0.01])

    def api_model(input_ids, **kwargs):
        return probs.log().expand(input_ids.shape[0], input_ids.shape[1], -1)

    wrapped = PerturbedOutputModel(api_model, round_decimals=1)
    out = wrapped(input_ids=torch.zeros((2, 3), dtype=torch.long)).logits
    expected = torch.tensor([5 / 9, 3 / 9, 1 / 9, 0.0, 0.0])  # rounded to [.5, .3, .1, 0, 0], renormalised
    assert torch.isfinite(out).all()
    assert torch.allclose(out.exp(), expected.expand_as(out), atol=1e-7)
    assert (out[..., 3:] == out[..., 3:].min()).all()

    everything_rounds_to_zero = PerturbedOutputModel(lambda input_ids: torch.zeros(1, 1, 4), round_decimals=0)
    assert torch.allclose(everything_rounds_to_zero(torch.zeros((1, 1), dtype=torch.long)).logits.exp(),
                          torch.full((1, 1, 4), 0.25))


def test_noise_is_seeded_and_keyed_by_the_prompt(model, ids):
    noisy = PerturbedOutputModel(model, noise_std=0.01, seed=3)
    with torch.no_grad():
        a = noisy(input_ids=ids).logits
        b = noisy(input_ids=ids).logits
        c = PerturbedOutputModel(model, noise_std=0.01, seed=4)(input_ids=ids).logits
        # the same sequence alone, and with right padding: the same noisy answer
        alone = noisy(input_ids=ids[1:2]).logits
        padded_ids = torch.cat([ids[1:2], torch.zeros((1, 4), dtype=torch.long)], dim=1)
        mask = torch.cat([torch.ones((1, 12)), torch.zeros((1, 4))], dim=1).long()
        padded = noisy(input_ids=padded_ids, attention_mask=mask).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.allclose(alone[0], a[1], atol=1e-6)
    assert torch.allclose(padded[0, :12], a[1], atol=1e-6)
    raw = _raw_logp(model, ids)
    assert not torch.allclose(a, raw, atol=1e-3)
    assert torch.isfinite(a).all()
    assert torch.allclose(a.exp().sum(-1), torch.ones(a.shape[:-1]), atol=1e-5)
    # the noise at a position depends on its prompt only, not on the tokens after it
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1) % VOCAB
    with torch.no_grad():
        after_change = noisy(input_ids=changed).logits
    raw_changed = _raw_logp(model, changed)
    assert torch.allclose((a - raw)[:, :8], (after_change - raw_changed)[:, :8], atol=1e-5)


def test_passes_attention_mask_and_exposes_the_model_surface(model, ids):
    seen = {}

    def recorder(input_ids, attention_mask=None):
        seen["attention_mask"] = attention_mask
        return model(input_ids=input_ids, attention_mask=attention_mask)

    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        out = PerturbedOutputModel(recorder)(input_ids=ids, attention_mask=mask).logits
    assert seen["attention_mask"] is mask
    assert torch.equal(out, _raw_logp(model, ids, attention_mask=mask))

    wrapped = PerturbedOutputModel(model, top_k=5)
    assert wrapped.config is model.config
    assert wrapped.get_output_embeddings() is None
    wrapped.train()
    assert model.training
    wrapped.eval()
    assert not model.training
    assert PerturbedOutputModel(recorder).config is None


def test_loss_from_labels_matches_the_model_under_identity_and_rises_under_truncation(model, ids):
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss
        same = PerturbedOutputModel(model)(input_ids=ids, labels=ids).loss
        truncated = PerturbedOutputModel(model, top_k=1)(input_ids=ids, labels=ids).loss
    assert same.item() == pytest.approx(reference.item(), abs=1e-5)
    assert truncated > reference


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"top_k": 0}, {"round_decimals": -1}, {"noise_std": -0.1}, {"floor": 0.0}],
)
def test_invalid_settings_are_rejected(model, kwargs):
    with pytest.raises(ValueError):
        PerturbedOutputModel(model, **kwargs)


def test_rejects_a_non_callable_and_unknown_outputs():
    with pytest.raises(TypeError, match="callable"):
        PerturbedOutputModel(42)
    with pytest.raises(TypeError, match="logits"):
        PerturbedOutputModel(lambda input_ids: {"scores": 1})(input_ids=torch.zeros((1, 2), dtype=torch.long))


def test_score_tokens_sees_the_perturbed_view(model):
    from transformers import ByT5Tokenizer

    from mia_guard.canaries.canary_set import CanarySet
    from mia_guard.canaries.encoding import encode_canaries
    from mia_guard.scoring.forward import score_tokens

    encoded = encode_canaries(CanarySet.generate(8, seed=0), ByT5Tokenizer(extra_ids=0))
    clean = score_tokens(model, encoded)
    identity = score_tokens(PerturbedOutputModel(model), encoded)
    top1 = score_tokens(PerturbedOutputModel(model, top_k=1), encoded)
    assert torch.equal(clean.mask, identity.mask)
    assert torch.allclose(clean.nll[clean.mask], identity.nll[identity.mask], atol=1e-5)
    # with only the top token exposed, every other target sits at the floor: NLL = -log(1e-12)
    missed = top1.mask & (clean.top1 == 0)
    assert missed.any()
    assert torch.allclose(top1.nll[missed], torch.full((int(missed.sum()),), -math.log(1e-12)), atol=1e-3)
