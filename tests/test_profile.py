"""Per-position leakage profile: planted positions, correlation structure, the analysis, plot and table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lira_synthetic import ar1_noise, random_split, token_stats

from mia_guard import Auditor, CanarySet
from mia_guard.analyses.profile import (
    leakage_profile,
    oriented_statistic,
    pairwise_correlation,
    plot_profile,
    profile_figure,
    profile_markdown,
)
from mia_guard.audit.result import AuditHistory
from mia_guard.experiments.demo_assets import byte_tokenizer

POSITIONS = 12


def planted(n: int, seed: int, position: int = 5, shift: float = 1.0, rho: float = 0.6):
    """AR(1) confidences (lag-1 correlation ``rho``); members gain ``shift`` at ``position`` only."""
    rng = np.random.default_rng(seed)
    is_member = random_split(rng, n)
    values = ar1_noise(rng, n, POSITIONS, rho)
    values[is_member, position] += shift
    return token_stats(values), is_member


def test_profile_finds_the_planted_position():
    stats, is_member = planted(400, seed=0, position=5)
    profile = leakage_profile(stats, is_member)
    assert profile["strongest_position"] == 5
    assert profile["positions"] == list(range(POSITIONS))
    planted_auc = profile["auc"][5]
    assert planted_auc["low"] > 0.6
    others = [a for j, a in enumerate(profile["auc"]) if j != 5]
    assert all(a["high"] < planted_auc["low"] for a in others)
    assert sum(a["low"] < 0.5 < a["high"] for a in others) >= 9  # the rest are at chance
    assert profile["n_members"] == [int(is_member.sum())] * POSITIONS
    # the mean over 12 positions dilutes the one informative token
    assert profile["overall_auc"]["value"] < planted_auc["value"] - 0.1


def test_profile_measures_the_correlation_between_positions():
    stats, is_member = planted(600, seed=1, shift=0.0, rho=0.7)
    profile = leakage_profile(stats, is_member)
    for label in ("members", "nonmembers"):
        matrix = np.array(profile["correlation"][label], dtype=np.float64)
        assert matrix.shape == (POSITIONS, POSITIONS)
        np.testing.assert_allclose(np.diag(matrix), 1.0)
        np.testing.assert_allclose(matrix, matrix.T, atol=1e-4)
        summary = profile["correlation_summary"][label]
        assert summary["mean_lag1"] == pytest.approx(0.7, abs=0.08)
        assert 2.0 < summary["effective_positions"] < 6.0  # far fewer than 12 independent tokens
    independent = leakage_profile(*planted(600, seed=2, shift=0.0, rho=0.0))
    assert independent["correlation_summary"]["members"]["effective_positions"] > 9.0


def test_pairwise_correlation_uses_rows_where_both_positions_exist():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(300, 4))
    values[:, 1] = values[:, 0] + 0.1 * rng.normal(size=300)
    values[150:, 3] = np.nan  # a shorter half
    values[:, 2] = 1.0  # constant: undefined correlation
    corr = pairwise_correlation(values)
    assert corr[0, 1] == pytest.approx(np.corrcoef(values[:, 0], values[:, 1])[0, 1])
    assert corr[0, 3] == pytest.approx(np.corrcoef(values[:150, 0], values[:150, 3])[0, 1])
    assert np.isnan(corr[0, 2]) and np.isnan(corr[2, 2])


def test_ragged_canaries_profile_only_positions_with_enough_of_both_classes():
    rng = np.random.default_rng(4)
    is_member = random_split(rng, 200)
    lengths = np.where(np.arange(200) < 192, 6, POSITIONS)  # only 8 canaries reach past position 5
    stats = token_stats(rng.normal(size=(200, POSITIONS)), lengths)
    profile = leakage_profile(stats, is_member, min_per_class=5, max_positions=4)
    assert profile["positions"] == [0, 1, 2, 3]
    assert profile["positions_available"] == 6  # 8 canaries cannot hold 5 of each class
    assert "first 4 of" in profile_markdown(profile)


def test_profile_orientation_makes_higher_member_like():
    stats, is_member = planted(300, seed=5, shift=1.5)
    by_nll = leakage_profile(stats, is_member, statistic="nll")
    assert by_nll["strongest_position"] == 5 and by_nll["auc"][5]["value"] > 0.8
    np.testing.assert_allclose(oriented_statistic(stats, "nll"), -stats.nll.double().numpy())
    with pytest.raises(ValueError, match="unknown profile statistic"):
        leakage_profile(stats, is_member, statistic="logits")


def test_profile_analysis_runs_in_the_auditor_and_survives_the_history_file(tmp_path):
    canaries = CanarySet.generate(300, "code_credential", seed=3)
    rng = np.random.default_rng(6)
    values = ar1_noise(rng, 300, POSITIONS, 0.5)
    values[canaries.is_member, 8] += 1.0
    stats = token_stats(values)
    auditor = Auditor(canaries, byte_tokenizer(), attacks=["loss"], reference="none",
                      analyses=["profile"], analysis_options={"profile": {"max_positions": 10}})
    result = auditor.evaluate(stats, 50)
    profile = result.extras["profile"]
    assert profile["aligned"] is True and profile["strongest_position"] == 8
    assert len(profile["positions"]) == 10
    json.dumps(profile, allow_nan=False)  # plain JSON: no NaN, no numpy types
    auditor.history.save(tmp_path / "history.json")
    assert AuditHistory.load(tmp_path / "history.json").last.extras["profile"] == profile


def test_plot_and_markdown_render_a_profile(tmp_path):
    stats, is_member = planted(200, seed=7)
    profile = leakage_profile(stats, is_member)
    path = plot_profile(profile, tmp_path / "profile.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    figure = profile_figure(profile)
    assert len(figure.axes) == 4  # AUC panel, two heatmaps, colorbar
    text = profile_markdown(profile)
    assert "| 5 (strongest) |" in text
    assert text.count("\n| ") >= POSITIONS + 4
    assert "effective independent positions (of 12)" in text


def test_profile_rejects_too_few_canaries():
    stats = token_stats(np.zeros((6, 3)) + np.arange(3))
    with pytest.raises(ValueError, match="needs more canaries"):
        leakage_profile(stats, np.array([True, False] * 3))
    with pytest.raises(ValueError, match="is_member has shape"):
        leakage_profile(stats, np.array([True, False]))


def _profiled_auditor(n: int = 200) -> Auditor:
    canaries = CanarySet.generate(n, "code_credential", seed=4)
    auditor = Auditor(canaries, byte_tokenizer(), attacks=["loss"], reference="none", analyses=["profile"])
    rng = np.random.default_rng(8)
    for step in (0, 10):
        values = ar1_noise(rng, n, POSITIONS, 0.3)
        values[canaries.is_member, 2] += 1.2 * (step > 0)
        auditor.evaluate(token_stats(values), step)
    return auditor


def test_report_files_include_the_final_profile(tmp_path):
    from mia_guard.report.files import REPORT_FILES, write_report

    auditor = _profiled_auditor()
    paths = write_report(auditor.history, tmp_path, canaries=auditor.canaries)
    assert set(paths) == set(REPORT_FILES) | {"profile"}
    assert paths["profile"].read_bytes()[:4] == b"\x89PNG"
    text = paths["markdown"].read_text()
    assert "## Leakage per position (final audit)" in text
    assert "| 2 (strongest) |" in text and "](profile.png)" in text
    assert '"correlation"' not in text  # not dumped again as raw JSON among the further figures


def test_tensorboard_sink_writes_the_profile_image_and_table(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    from mia_guard.callbacks.sinks import TensorBoardSink

    auditor = _profiled_auditor()
    sink = TensorBoardSink(tmp_path, ["loss"], auditor.fprs, auditor.canaries.is_member)
    for result in auditor.history:
        sink.write(result)
    sink.close()
    (events,) = [p for p in tmp_path.iterdir() if p.name.startswith("events.out")]
    acc = event_accumulator.EventAccumulator(str(events), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert [image.step for image in acc.Images("mia/profile")] == [0, 10]
    table = acc.Tensors("mia/profile/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| 2 (strongest) |" in table


def test_profile_analysis_steps_aside_when_canaries_are_too_few(tmp_path):
    from mia_guard.report.files import write_report

    canaries = CanarySet.generate(8, "code_credential", seed=9, split="half")
    auditor = Auditor(canaries, byte_tokenizer(), attacks=["loss"], reference="none", analyses=["profile"])
    result = auditor.evaluate(token_stats(np.random.default_rng(0).normal(size=(8, POSITIONS))), 0)
    assert "needs more canaries" in result.extras["profile"]["skipped"]
    assert result.metrics["loss"].n_members == 4  # the audit itself went on
    paths = write_report(auditor.history, tmp_path)
    assert "profile" not in paths and "needs more canaries" in paths["markdown"].read_text()
