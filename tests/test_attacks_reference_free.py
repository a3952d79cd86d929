"""Reference-free attacks and the registry: formulas checked against direct computations."""

import zlib

import numpy as np
import pytest
import torch

from mia_guard import CanarySet, attacks, score_tokens
from mia_guard.attacks import AttackContext
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2


@pytest.fixture(scope="module")
def scored():
    model = tiny_gpt2(seed=3).eval()
    tok = byte_tokenizer()
    canaries = CanarySet.generate(12, template="pin_sentence", seed=1)
    return model, tok, canaries, score_tokens(model, canaries, tok)


def test_min_k_plus_plus_equals_direct_computation_from_full_logits(scored):
    model, tok, canaries, stats = scored
    got = attacks.get("min_k_plus_plus")(AttackContext(stats), k=0.5)
    enc = encode_canaries(canaries, tok)
    for i in range(len(canaries)):
        ids = torch.tensor([enc.input_ids[i]])
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        values = []
        for t in range(enc.start[i], enc.end[i]):
            p = logp[t - 1].exp()
            mu = (p * logp[t - 1]).sum()
            sigma = ((p * (logp[t - 1] - mu) ** 2).sum()).sqrt()
            values.append(((logp[t - 1, ids[0, t]] - mu) / sigma).item())
        lowest = sorted(values)[: max(1, int(0.5 * len(values)))]
        assert got[i] == pytest.approx(np.mean(lowest), abs=1e-4)


def test_loss_min_k_zlib_and_reference_formulas(scored):
    _, _, canaries, stats = scored
    nll = stats.nll.double().numpy()
    lengths = stats.mask.sum(1).numpy()
    ctx = AttackContext(stats, texts=canaries.texts, reference=stats)
    loss = attacks.get("loss")(ctx)
    assert np.allclose(loss, [-nll[i, : lengths[i]].mean() for i in range(len(loss))])
    min_k = attacks.get("min_k")(ctx, k=0.2)
    for i in range(len(loss)):
        worst = np.sort(-nll[i, : lengths[i]])[: max(1, int(0.2 * lengths[i]))]  # Shi et al.: int(k * n)
        assert min_k[i] == pytest.approx(worst.mean())
    z = attacks.get("zlib")(ctx)
    assert z[0] == pytest.approx(loss[0] / len(zlib.compress(canaries.texts[0].encode())))
    assert np.allclose(attacks.get("reference")(ctx), 0.0)


def test_registry_lists_registers_and_validates():
    assert {"loss", "zlib", "min_k", "min_k_plus_plus", "reference"} <= set(attacks.available())
    with pytest.raises(KeyError, match="unknown attack 'nope'; available: .*loss"):
        attacks.get("nope")

    @attacks.register("test_constant_shape_bug", overwrite=True)
    def bad(ctx):
        return np.zeros(3)

    ctx = AttackContext(stats=_stats(5))
    with pytest.raises(RuntimeError, match=r"returned shape \(3,\), expected \(5,\)"):
        attacks.get("test_constant_shape_bug")(ctx)
    with pytest.raises(ValueError, match="needs a reference model's statistics"):
        attacks.get("reference")(ctx)
    with pytest.raises(ValueError, match="already registered"):
        attacks.register("loss")(lambda ctx: None)
    with pytest.raises(ValueError, match="k must be a fraction"):
        attacks.get("min_k")(ctx, k=0)


def test_nan_scores_are_ranked_lowest_with_a_warning():
    @attacks.register("test_nan_scores", overwrite=True)
    def nan_scores(ctx):
        return np.array([1.0, np.nan, 0.5, 2.0, 0.0])

    with pytest.warns(RuntimeWarning, match="1 non-finite"):
        scores = attacks.get("test_nan_scores")(AttackContext(_stats(5)))
    assert scores[1] == -np.inf


def _stats(n):
    from mia_guard import TokenStats

    z = torch.zeros(n, 4)
    return TokenStats(z, z, z + 1, z + 1, z, torch.ones(n, 4, dtype=torch.bool))
