"""Token-calibrated and pooled sequence LiRA (mia_guard.attacks.sequence_variants).

Synthetic statistics mimic what the demo's byte-level GPT-2 shows: each secret
character has its own confidence level (the model prefers some characters), which is
noise for membership, and members gain a little on every token.
"""

from __future__ import annotations

import numpy as np
import pytest
from lira_synthetic import token_stats
from sklearn.metrics import roc_auc_score

from mia_guard import Auditor, CanarySet
from mia_guard.attacks import AttackContext, get
from mia_guard.attacks.sequence_lira import sequence_lira_scores
from mia_guard.attacks.sequence_variants import key_means, token_keys
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.experiments.demo_assets import byte_tokenizer

N = 600
SECRET = 12


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def scored_mask(canaries: CanarySet, tokenizer) -> np.ndarray:
    encoded = encode_canaries(canaries, tokenizer)
    return np.arange(int(encoded.num_scored.max()))[None, :] < encoded.num_scored[:, None]


def character_effect_context(seed: int, gain: float, n: int = N) -> tuple[AttackContext, np.ndarray]:
    """Credential canaries whose per-token confidence = effect of the character + noise (+ gain if member)."""
    canaries = CanarySet.generate(n, "code_credential", seed=seed, split="half")
    rng = np.random.default_rng([seed, 1])
    effect = {ch: rng.normal(0.0, 0.4) for ch in canaries.template.alphabet}
    level = np.array([[effect[ch] for ch in c.secret] for c in canaries.canaries])
    values = level + rng.normal(0.0, 0.15, level.shape) + gain * canaries.is_member[:, None]
    ctx = AttackContext(token_stats(values), texts=canaries.texts, is_member=canaries.is_member, seed=seed)
    return ctx, canaries.is_member


def auc(name: str, ctx: AttackContext, is_member: np.ndarray) -> float:
    return roc_auc_score(is_member, get(name)(ctx))


# ---------------------------------------------------------------------------- token identities
def test_token_keys_are_the_secret_characters_under_a_byte_tokenizer(tokenizer):
    canaries = CanarySet.generate(50, "code_credential", seed=3)
    keys = token_keys(canaries.texts, scored_mask(canaries, tokenizer))
    assert keys.shape == (50, SECRET)
    secrets = np.array([list(c.secret) for c in canaries.canaries])
    for a in range(0, 50, 7):  # same key <=> same character, across canaries and positions
        for b in range(50):
            same_key, same_char = keys[a][:, None] == keys[b][None, :], secrets[a][:, None] == secrets[b][None, :]
            np.testing.assert_array_equal(same_key, same_char)


def test_token_keys_use_characters_when_bytes_do_not_match_and_mark_padding():
    texts = ["pin: ééa.", "pin: bé.", "pin: ccé."]  # 'é' is 2 UTF-8 bytes: one scored token per character
    mask = np.array([[True, True, True], [True, True, False], [True, True, True]])
    keys = token_keys(texts, mask)
    assert keys[1, 2] == -1
    assert keys[0, 0] == keys[0, 1] == keys[1, 1] == keys[2, 2]
    assert len({keys[0, 2], keys[1, 0], keys[2, 0]}) == 3


def test_token_keys_refuse_tokens_that_are_not_one_per_character():
    canaries = CanarySet.generate(20, "code_credential", seed=0)
    half = np.arange(SECRET)[None, :] < np.full((20, 1), SECRET // 2)  # as if a BPE made 6 tokens of 12 characters
    with pytest.raises(ValueError, match="byte- or character-level tokenizer"):
        token_keys(canaries.texts, half)
    with pytest.raises(ValueError, match="share no prefix"):
        token_keys(["abc", "xyz"], np.ones((2, 3), dtype=bool))


def test_key_means_shrink_rare_keys_towards_the_average():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 4, (400, 10))
    keys[2:5, 0] = 4  # key 4: three cells, so its raw mean is mostly noise
    keys[0, 0], keys[1, 0] = 5, -1  # key 5 only in a row left out of the fit; one padding cell
    truth = np.array([-0.3, -0.1, 0.1, 0.3, 0.0, 0.0])
    values = truth[np.maximum(keys, 0)] + rng.normal(0.0, 1.0, keys.shape)
    rows = np.arange(2, 400)
    means = key_means(values, keys, rows)
    np.testing.assert_allclose(means[:4], truth[:4], atol=0.08)
    raw = np.array([values[rows][keys[rows] == k].mean() for k in range(5)])
    average = raw.mean()
    assert abs(means[4] - average) < 0.5 * abs(raw[4] - average)
    assert means[5] == pytest.approx(average)


# ---------------------------------------------------------------------------- attack power
def test_token_calibration_removes_the_character_noise():
    ctx, is_member = character_effect_context(seed=0, gain=0.04)
    loss, lira = auc("loss", ctx, is_member), auc("lira_online", ctx, is_member)
    calibrated_seq, calibrated = auc("seq_lira_tokencal", ctx, is_member), auc("lira_tokencal", ctx, is_member)
    assert loss < 0.66 and lira < 0.66
    assert calibrated_seq > loss + 0.1 and calibrated > lira + 0.1
    assert calibrated_seq > calibrated - 0.03


def test_token_calibrated_scores_carry_no_signal_without_leakage():
    """Key means fitted on the training folds' non-members only: no label leaks into a canary's own score."""
    aucs = [auc(name, *character_effect_context(seed, gain=0.0)) for seed in range(3)
            for name in ("seq_lira_tokencal", "lira_tokencal")]
    assert abs(np.mean(aucs) - 0.5) < 0.03
    assert max(abs(a - 0.5) for a in aucs) < 0.08


def test_seq_lira_pooled_is_sequence_lira_with_one_shared_covariance():
    ctx, is_member = character_effect_context(seed=1, gain=0.1, n=200)
    values = ctx.stats.confidence.double().numpy()
    expected = sequence_lira_scores(values, ctx.stats.mask.numpy(), is_member, pooled=True, seed=1)
    np.testing.assert_allclose(get("seq_lira_pooled")(ctx), expected)


def test_the_auditor_runs_token_calibration_or_says_why_not(tokenizer):
    canaries = CanarySet.generate(200, "code_credential", seed=2)
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 0.3, (200, SECRET)) + 0.2 * canaries.is_member[:, None]
    attacks = ("loss", "seq_lira_tokencal", "lira_tokencal")
    result = Auditor(canaries, tokenizer, attacks=attacks, reference="none").evaluate(token_stats(values), 0)
    assert set(result.metrics) == set(attacks)
    assert result.metrics["seq_lira_tokencal"].auc.value > 0.8
    tokens = CanarySet.from_token_ids(rng.integers(3, 40, (200, SECRET + 1)).tolist(), seed=2)
    result = Auditor(tokens, attacks=attacks, reference="none").evaluate(token_stats(values), 0)
    assert result.skipped["seq_lira_tokencal"] == "needs canary texts"
    assert "loss" in result.metrics
