"""Auditor on a really trained tiny GPT-2: leakage found after training, none before; history files."""

import json

import numpy as np
import pytest
import torch

from mia_guard import AuditHistory, Auditor, TokenStats, attacks
from mia_guard._io import atomic_write_json


def test_loss_attack_finds_memorization_after_training_and_none_before(trained_lm):
    auditor = Auditor(trained_lm.canaries, trained_lm.tokenizer)
    before = auditor.audit(trained_lm.untrained, step=0)
    after = auditor.audit(trained_lm.model, step=300)
    auc_before, auc_after = before.metrics["loss"].auc, after.metrics["loss"].auc
    assert auc_before.low < 0.5 < auc_before.high  # no signal before training
    assert auc_after.value > 0.9 and auc_after.low > 0.8  # clear signal at 16 repetitions
    assert after.member_nll.high < after.nonmember_nll.low
    # the first audit (step 0) is the reference for the calibrated attack
    assert after.metrics["reference"].auc.value > 0.9
    assert auditor.history.steps == [0, 300]


def test_table_reports_intervals_and_unresolvable_fprs(trained_lm):
    result = Auditor(trained_lm.canaries, trained_lm.tokenizer, reference="none").audit(trained_lm.model, 1)
    table = result.table()
    for name in ("loss", "min_k_plus_plus", "lira_online_ref", "classifier_logreg"):
        assert name in table
    assert "skipped reference: needs a reference model's statistics" in table
    n_out = int((~trained_lm.canaries.is_member).sum())
    assert f"n/a at 0.1% FPR" in table and f"have {n_out}" in table
    assert np.isnan(result.metrics["loss"].tpr_at_fpr[0.001].value)


def test_history_roundtrip_keeps_scores_metrics_and_token_stats(trained_lm, tmp_path):
    auditor = Auditor(trained_lm.canaries, trained_lm.tokenizer)
    auditor.audit(trained_lm.untrained, step=0)
    auditor.audit(trained_lm.model, step=10)
    path = auditor.history.save(tmp_path / "h.json")
    loaded = AuditHistory.load(path)
    assert loaded.steps == [0, 10]
    original, back = auditor.history.last, loaded.last
    assert back.metrics["loss"].auc == original.metrics["loss"].auc
    assert np.array_equal(back.scores["min_k_plus_plus"], original.scores["min_k_plus_plus"])
    assert torch.equal(back.stats.nll, original.stats.nll)
    curve = loaded.curve("loss", "auc")
    assert list(curve["step"]) == [0, 10] and curve["value"][1] > curve["value"][0]
    # the manifest and its record folder, no temp files; an edited file is refused, and so is
    # a history written by a newer mia_guard
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_dir()) == ["h.json"]
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        AuditHistory.load(path)
    del data["checksum"]
    atomic_write_json(path, data, checksum=True)
    with pytest.raises(ValueError, match="schema version 99"):
        AuditHistory.load(path)


def test_nonfinite_statistics_are_left_out_and_reported(trained_lm):
    auditor = Auditor(trained_lm.canaries, trained_lm.tokenizer, reference="none")
    stats = auditor.score(trained_lm.model)
    broken = stats.nll.clone()
    broken[[0, 5], 0] = float("nan")
    stats = TokenStats(broken, stats.confidence, stats.entropy, stats.logp_std, stats.top1, stats.mask)
    result = auditor.evaluate(stats, step=3)
    assert result.invalid_canaries == [0, 5]
    assert any("2 canaries had NaN/inf" in note for note in result.notes)
    assert np.isnan(result.scores["loss"][[0, 5]]).all()
    assert result.metrics["loss"].n_members + result.metrics["loss"].n_nonmembers == len(trained_lm.canaries) - 2


def test_custom_attack_runs_through_the_auditor(trained_lm):
    @attacks.register("test_top1_rate", overwrite=True)
    def top1_rate(ctx):
        return ctx.stats.masked_mean("top1")

    result = Auditor(trained_lm.canaries, trained_lm.tokenizer, attacks=["test_top1_rate"]).audit(trained_lm.model, 0)
    assert result.metrics["test_top1_rate"].auc.value > 0.7


def test_auditor_input_errors(trained_lm):
    canaries, tok = trained_lm.canaries, trained_lm.tokenizer
    with pytest.raises(KeyError, match="unknown attack 'lossy'"):
        Auditor(canaries, tok, attacks=["lossy"])
    with pytest.raises(ValueError, match="not in the list"):
        Auditor(canaries, tok, attacks=["loss"], attack_params={"min_k": {"k": 0.1}})
    with pytest.raises(ValueError, match="FPR levels must be in"):
        Auditor(canaries, tok, fprs=[0.0])
    with pytest.raises(ValueError, match="no members or no non-members"):
        Auditor(canaries.with_membership(np.ones(len(canaries), bool)), tok)
    with pytest.raises(ValueError, match="need a tokenizer"):
        Auditor(canaries)


def test_duplicate_attack_names_are_refused(trained_lm):
    with pytest.raises(ValueError, match=r"\['loss'\] are listed more than once"):
        Auditor(trained_lm.canaries, trained_lm.tokenizer, attacks=["loss", "min_k", "loss"])


def test_cross_fitted_auc_interval_keeps_its_coverage_when_nothing_leaks():
    """Pooled DeLong on cross-fitted scores excludes 0.5 in ~16% of null draws (measured);
    the fold-wise corrected interval must stay near its nominal 5% (120 intervals, <= 10%)."""
    from mia_guard.canaries.canary_set import CanarySet

    excluded = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        canaries = CanarySet.from_token_ids([[1, 2, 3, i] for i in range(160)], seed=seed)
        noise = torch.from_numpy(rng.normal(size=(160, 6)).astype(np.float32))
        ones = torch.ones(160, 6)
        stats = TokenStats(noise.abs(), noise, ones, ones, torch.zeros(160, 6), torch.ones(160, 6, dtype=torch.bool))
        auditor = Auditor(canaries, attacks=["lira_online", "seq_lira"], reference="none", seed=seed)
        for metrics in auditor.evaluate(stats, step=0).metrics.values():
            excluded += not (metrics.auc.low <= 0.5 <= metrics.auc.high)
            assert "per-fold AUCs" in metrics.auc.note
    assert excluded <= 12
