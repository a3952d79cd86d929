"""Trajectory attacks (trajectory_logreg, trajectory_rnn) on synthetic audit histories and a real tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from lm_training import train_lm

from mia_guard import Auditor, CanarySet, TokenStats
from mia_guard.attacks import AttackContext, get
from mia_guard.attacks.trajectory import FEATURES, select_audits, summary_features, trajectory_tensor
from mia_guard.experiments.demo_assets import byte_tokenizer, stdlib_corpus, tiny_gpt2
from mia_guard.stats.roc import roc_auc

torch.set_num_threads(1)

TRAJECTORY_ATTACKS = ("trajectory_logreg", "trajectory_rnn")
POSITIONS = 10


def stats_from_nll(mean_nll: np.ndarray, rng: np.random.Generator) -> TokenStats:
    """TokenStats ``[N, POSITIONS]`` whose per-token NLL scatters (sd 0.2) around each canary's ``mean_nll``."""
    nll = np.clip(mean_nll[:, None] + rng.normal(0.0, 0.2, (len(mean_nll), POSITIONS)), 0.01, None)
    nll_t = torch.tensor(nll, dtype=torch.float32)
    p = torch.exp(-nll_t).clamp(max=0.999)
    return TokenStats(
        nll=nll_t,
        confidence=torch.log(p) - torch.log1p(-p),
        entropy=nll_t + torch.tensor(rng.normal(0.0, 0.3, nll.shape), dtype=torch.float32),
        logp_std=torch.full_like(nll_t, 1.0),
        top1=(p > 0.5).float(),
        mask=torch.ones(nll.shape, dtype=torch.bool),
    )


def faster_drop_history(is_member: np.ndarray, n_audits: int = 6, seed: int = 0) -> list[TokenStats]:
    """Audits where every canary starts at its own difficulty (sd 1 nat) and members' loss falls
    1.0 nat by the end, non-members' 0.6: final losses overlap, the drops do not."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(3.0, 1.0, len(is_member))
    drop = np.where(is_member, 1.0, 0.6)
    out = []
    for t in np.linspace(0.0, 1.0, n_audits):
        mean = difficulty - drop * np.sqrt(t) + rng.normal(0.0, 0.05, len(is_member))
        out.append(stats_from_nll(mean, rng))
    return out


def context(history: list[TokenStats], is_member: np.ndarray, seed: int = 0) -> AttackContext:
    return AttackContext(stats=history[-1], history=history[:-1], is_member=is_member, seed=seed)


def membership(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 99]).random(n) < 0.5


@pytest.mark.parametrize("name", TRAJECTORY_ATTACKS)
def test_registered_as_supervised_history_attacks(name):
    attack = get(name)
    assert attack.supervised
    assert attack.needs == frozenset({"history"})
    with pytest.raises(ValueError, match="earlier audit"):
        attack(AttackContext(stats=faster_drop_history(np.ones(4, bool), 1)[0], is_member=np.ones(4, bool)))


@pytest.mark.parametrize("name", TRAJECTORY_ATTACKS)
def test_trajectory_beats_final_loss_when_members_drop_faster(name):
    is_member = membership(300, seed=1)
    history = faster_drop_history(is_member, seed=1)
    final_loss_auc = roc_auc(get("loss")(AttackContext(stats=history[-1])), is_member)
    trajectory_auc = roc_auc(get(name)(context(history, is_member)), is_member)
    assert 0.55 < final_loss_auc < 0.75  # the final losses overlap
    assert trajectory_auc > 0.95
    assert trajectory_auc > final_loss_auc + 0.2


@pytest.mark.parametrize("name", TRAJECTORY_ATTACKS)
def test_random_labels_give_chance_auc(name):
    """Labels unrelated to the trajectories: cross-fitting keeps the AUC near 0.5 (no fit-on-self leak)."""
    aucs = []
    for seed in range(4):
        labels = membership(400, seed=10 + seed)
        history = faster_drop_history(membership(400, seed=50 + seed), seed=seed)
        aucs.append(roc_auc(get(name)(context(history, labels, seed=seed)), labels))
    # one draw's AUC has sd ~0.035 here; the same logistic model scored on its own training canaries gives 0.62
    assert abs(np.mean(aucs) - 0.5) < 0.05, aucs


def test_rnn_is_deterministic_and_leaves_global_rng_alone():
    is_member = membership(120, seed=3)
    history = faster_drop_history(is_member, seed=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = get("trajectory_rnn")(context(history, is_member), epochs=30)
    after = torch.rand(1)
    second = get("trajectory_rnn")(context(history, is_member), epochs=30)
    np.testing.assert_array_equal(first, second)
    assert torch.equal(before, after)


def test_trajectory_tensor_layout_thinning_and_nan_fill():
    is_member = membership(40, seed=4)
    history = faster_drop_history(is_member, n_audits=12, seed=4)
    broken = history[2].nll.clone()
    broken[5, 0] = float("nan")
    history[2] = dataclasses.replace(history[2], nll=broken)
    ctx = context(history, is_member)
    full = trajectory_tensor(ctx, max_audits=32)
    assert full.shape == (40, 12, len(FEATURES))
    assert np.isfinite(full).all()
    np.testing.assert_allclose(full[:, -1, 0], history[-1].masked_mean("nll"))  # current audit is the last step
    np.testing.assert_allclose(full[:, 0, 0], history[0].masked_mean("nll"))
    thinned = trajectory_tensor(ctx, max_audits=4)
    assert thinned.shape[1] == 4
    np.testing.assert_array_equal(select_audits(12, 4), [0, 4, 7, 11])
    np.testing.assert_allclose(thinned[:, [0, -1]], full[:, [0, -1]])
    summary = summary_features(full)
    np.testing.assert_allclose(summary[:, 12 * len(FEATURES) : 13 * len(FEATURES)], full[:, -1] - full[:, 0])


def test_auditor_reports_trajectory_attacks_from_the_second_audit():
    """Three audits of a tiny GPT-2 while it trains on member canaries: skipped at the first, scored after."""
    tokenizer = byte_tokenizer()
    canaries = CanarySet.generate(60, "code_credential", seed=2)
    data = canaries.insert_into(stdlib_corpus(max_chars=60 * 120), repetitions=8)
    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0)
    auditor = Auditor(canaries, tokenizer, attacks=("loss", *TRAJECTORY_ATTACKS), reference="none")
    results = [auditor.audit(model, 0)]
    for step in (40, 80):
        model = train_lm(model, data, tokenizer, steps=40, seed=step).train()
        results.append(auditor.audit(model, step))
    first, *later = results
    assert set(first.skipped) == set(TRAJECTORY_ATTACKS)
    assert all("earlier audit" in reason for reason in first.skipped.values())
    for result in later:
        assert not result.skipped
        for name in TRAJECTORY_ATTACKS:
            assert result.metrics[name].auc.low <= result.metrics[name].auc.value <= result.metrics[name].auc.high
            assert np.isfinite(result.scores[name]).all()
    # training on the members made them separable; the trajectory attacks see it too
    assert later[-1].metrics["trajectory_logreg"].auc.value > 0.7
