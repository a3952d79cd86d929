"""The "privacy" analysis: epsilon bounds and exposure per audit, options, guarantees, gate hand-off."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special, stats

from mia_guard import AuditHistory, Auditor
from mia_guard.analyses.privacy import _label_free_halves, privacy_figures
from mia_guard.stats.epsilon_one_run import canaries_needed_for_epsilon, one_run_epsilon_lower_bound
from mia_guard.stats.epsilon_two_point import two_point_epsilon_lower_bound
from mia_guard.stats.exposure import exposure

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


def coin_labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < 0.5


# ------------------------------------------------------------------ one-run bound


def test_fixed_attack_and_guesses_evaluate_every_canary_at_the_closed_form():
    labels = coin_labels(200)
    perfect = np.where(labels, 1.0, -1.0) + np.linspace(0, 0.1, 200)
    out = privacy_figures(
        {"loss": perfect}, labels, options={"privacy_attack": "loss", "k_plus": 30, "k_minus": 30, "delta": 0.0}
    )
    one_run = out["one_run"]
    assert (one_run["m"], one_run["r"], one_run["v"], one_run["k_source"]) == (200, 60, 60, "options")
    # all 60 guesses right, delta = 0: q^60 = 0.05 with q = e^eps / (1 + e^eps)
    assert out["epsilon_lb_one_run"] == pytest.approx(special.logit(0.05 ** (1 / 60)), abs=1e-7)
    assert one_run["guarantee"] == "theorem"


def test_fractions_scale_to_the_evaluated_canaries():
    labels = coin_labels(100)
    scores = np.where(labels, 1.0, -1.0)
    out = privacy_figures({"loss": scores}, labels, options={"privacy_attack": "loss", "k_plus": 0.1})
    assert (out["one_run"]["k_plus"], out["one_run"]["k_minus"]) == (10, 0)


def test_attack_and_guess_counts_are_chosen_on_the_calibration_half_only():
    n = 400
    labels = coin_labels(n, seed=3)
    cal, ev = _label_free_halves(n, seed=0)
    rng = np.random.default_rng(1)
    signal = np.where(labels, 1.0, -1.0) + 0.01 * rng.standard_normal(n)
    noise = rng.standard_normal(n)
    # "loss" is perfect on the calibration half only, "min_k" on the evaluation half only
    looks_good = np.where(np.isin(np.arange(n), cal), signal, noise)
    is_good = np.where(np.isin(np.arange(n), ev), signal, noise)
    out = privacy_figures({"loss": looks_good, "min_k": is_good}, labels)
    one_run = out["one_run"]
    assert one_run["attack"] == "loss"  # a choice peeking at the evaluation labels would take min_k
    assert one_run["k_source"] == "calibration_fold" and one_run["n_calibration"] == cal.size == n - one_run["m"]
    assert one_run["calibration_epsilon"] > 3.0
    assert out["epsilon_lb_one_run"] < 0.5  # and the evaluation half is honest about it


def test_chance_level_attack_gives_a_zero_bound():
    labels = coin_labels(500)
    out = privacy_figures({"loss": np.random.default_rng(7).standard_normal(500)}, labels)
    assert out["epsilon_lb_one_run"] == 0.0 and out["epsilon_lb_two_point"] == 0.0


def test_cross_fitted_attacks_and_non_coin_splits_are_flagged_heuristic():
    labels = coin_labels(100)
    scores = np.where(labels, 1.0, -1.0)
    strongest = privacy_figures({"loss": scores, "lira_online": scores}, labels)
    assert strongest["one_run"]["candidates"] == ["loss"]  # "strongest" prefers label-free attacks
    supervised = privacy_figures({"lira_online": scores}, labels, options={"privacy_attack": "lira_online"})
    assert supervised["one_run"]["guarantee"] == "heuristic"
    assert any("cross-fitted" in w for w in supervised["warnings"])
    half = privacy_figures({"loss": scores}, labels, coin_split=False)
    assert half["one_run"]["guarantee"] == "heuristic"
    assert any("fair coins" in w for w in half["warnings"])


def test_ceiling_warning_names_the_canaries_needed():
    labels = coin_labels(64)
    scores = np.where(labels, 1.0, -1.0)
    out = privacy_figures({"loss": scores}, labels, options={"epsilon_target": 4.0})
    ceiling = out["one_run"]["ceiling"]
    assert ceiling == pytest.approx(one_run_epsilon_lower_bound(32, 32, 32, 1e-5, 0.95))
    assert ceiling < 4.0
    (warning,) = [w for w in out["warnings"] if "target 4" in w]
    evaluated = canaries_needed_for_epsilon(4.0, 0.95, 1e-5)["canaries"]  # every guess right
    assert f"needs >= {2 * evaluated} canaries" in warning  # twice: half are for calibration
    quiet = privacy_figures({"loss": scores}, labels, options={"epsilon_target": 1.0})
    assert not [w for w in quiet["warnings"] if "target" in w]


# ------------------------------------------------------------------ two-point bound


def test_two_point_bound_is_the_union_bound_over_candidate_attacks():
    labels = coin_labels(300, seed=2)
    rng = np.random.default_rng(4)
    scores = {
        "loss": np.where(labels, 1.0, 0.0) + rng.standard_normal(300),
        "min_k": np.where(labels, 2.0, 0.0) + rng.standard_normal(300),
        "zlib": rng.standard_normal(300),
    }
    out = privacy_figures(scores, labels, confidence=0.9, options={"delta": 1e-4})
    level = 1 - 0.1 / 3
    expected = max(two_point_epsilon_lower_bound(s, labels, 1e-4, level, 0)["epsilon_lb"] for s in scores.values())
    assert out["epsilon_lb_two_point"] == pytest.approx(expected)
    assert out["two_point"]["attack"] == "min_k"
    assert out["two_point"]["confidence_per_attack"] == pytest.approx(level)
    assert 0 < out["epsilon_lb_two_point"] <= out["two_point"]["ceiling"]


# ------------------------------------------------------------------ exposure


def test_exposure_figures_with_simultaneous_intervals():
    labels = np.array([True] * 3 + [False] * 40)
    reference = np.arange(40) + 30.5
    nll = np.concatenate([[10.0, 35.0, 60.0], reference])  # 0, 5 and 30 references at or below
    out = privacy_figures({"loss": -nll}, labels, secret_nll=nll, secret_space_size=36**12)
    expected = exposure(nll[:3], reference, 36**12)
    assert out["exposure_max"] == expected.max and out["exposure_mean"] == expected.mean
    assert out["exposure_cap_bits"] == pytest.approx(12 * math.log2(36))
    # Clopper-Pearson for the rank fraction at 1 - 0.05/3, as scipy computes it
    counts = [0, 5, 30]
    cis = [stats.binomtest(c, 40).proportion_ci(1 - 0.05 / 3, method="exact") for c in counts]
    lows = [-math.log2(ci.high) for ci in cis]
    highs = [out["exposure_cap_bits"]] + [-math.log2(ci.low) for ci in cis[1:]]
    assert out["exposure_max_low"] == pytest.approx(max(lows))
    assert out["exposure_max_high"] == pytest.approx(out["exposure_cap_bits"])  # canary 0 beat every reference
    assert out["exposure_mean_low"] == pytest.approx(np.mean(lows))
    assert out["exposure_mean_high"] == pytest.approx(np.mean(highs))
    assert out["exposure_max_low"] <= out["exposure_max"] <= out["exposure_max_high"]
    assert out["exposure"]["n_extrapolated"] == 1
    assert any("extrapolation" in w for w in out["warnings"])


def test_exposure_is_left_out_without_a_secret_space():
    labels = coin_labels(50)
    out = privacy_figures({"loss": np.where(labels, 1.0, 0.0)}, labels)
    assert "exposure_max" not in out


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k_plus": 1.5}, "fraction"),
        ({"k_plus": -1}, ">= 0"),
        ({"delta": 1.0}, "delta"),
        ({"epsilon_target": 0}, "epsilon_target"),
        ({"privacy_attack": "", "k_plus": 3}, "privacy_attack"),
    ],
)
def test_bad_options_are_refused(options, message):
    labels = coin_labels(20)
    with pytest.raises(ValueError, match=message):
        privacy_figures({"loss": np.zeros(20)}, labels, options=options)


def test_unknown_or_absent_attacks():
    labels = coin_labels(20)
    with pytest.raises(KeyError, match="unknown attack"):
        privacy_figures({"loss": np.zeros(20)}, labels, options={"privacy_attack": "nope"})
    out = privacy_figures({"loss": np.zeros(20)}, labels, options={"privacy_attack": "reference"})
    assert "epsilon_lb_one_run" not in out and "did not run" in out["warnings"][0]
    with pytest.raises(ValueError, match="exceed the 20 canaries"):
        privacy_figures({"loss": np.zeros(20)}, labels, options={"privacy_attack": "loss", "k_plus": 15, "k_minus": 6})


# ------------------------------------------------------------------ in the Auditor, on a trained model


def test_privacy_analysis_on_a_trained_model_reaches_the_gate(trained_lm):
    from mia_guard.callbacks.sinks import audit_scalars
    from mia_guard.gate import ReleasePolicy, evaluate_result

    auditor = Auditor(
        trained_lm.canaries, trained_lm.tokenizer, attacks=ATTACKS, reference="none",
        analyses=["privacy"], analysis_options={"epsilon_target": 1.0},
    )
    result = auditor.audit(trained_lm.model, step=300)
    privacy = result.extras["privacy"]
    for name in ("epsilon_lb_one_run", "epsilon_lb_two_point", "exposure_max", "exposure_mean"):
        assert isinstance(privacy[name], float)
    assert privacy["epsilon_lb_one_run"] > 1.0 and privacy["one_run"]["guarantee"] == "theorem"
    # members were inserted 16 times: their secrets rank far ahead of random ones
    assert privacy["exposure_mean_low"] > 2.0
    assert privacy["exposure_max"] > math.log2(privacy["exposure"]["n_reference"])
    secret_nll = (result.stats.nll * result.stats.mask).sum(1).numpy()
    member = trained_lm.canaries.is_member
    assert secret_nll[member].mean() < secret_nll[~member].mean()
    assert privacy["exposure"]["n_members"] == int(member.sum())

    history = AuditHistory.from_dict(json.loads(json.dumps(auditor.history.to_dict())))
    assert history.last.extras["privacy"]["epsilon_lb_one_run"] == privacy["epsilon_lb_one_run"]

    scalars, _ = audit_scalars(result)  # what TensorBoard and the JSONL log receive
    assert scalars["privacy/epsilon_lb_one_run"] == privacy["epsilon_lb_one_run"]
    assert scalars["privacy/exposure_max_high"] == privacy["exposure_max_high"]

    from mia_guard.report.markdown import render_markdown
    from mia_guard.report.schema import build_report

    markdown = render_markdown(build_report(auditor.history, canaries=trained_lm.canaries))
    assert "## Privacy figures of the final audit" in markdown
    one = privacy["one_run"]
    assert f"| {privacy['epsilon_lb_one_run']:.3f} | attack {one['attack']}: {one['v']} of {one['r']}" in markdown
    assert "### privacy" not in markdown  # not repeated among the further figures

    blocked = evaluate_result(ReleasePolicy(max_epsilon_lower_bound=0.5), result)
    assert blocked.verdict == "blocked"
    assert evaluate_result(ReleasePolicy(max_epsilon_lower_bound=10.0), result).verdict == "pass"


def test_untrained_model_shows_nothing(trained_lm):
    auditor = Auditor(trained_lm.canaries, trained_lm.tokenizer, attacks=ATTACKS, reference="none",
                      analyses=["privacy"])
    privacy = auditor.audit(trained_lm.untrained, step=0).extras["privacy"]
    assert privacy["epsilon_lb_one_run"] == 0.0
    assert privacy["exposure_mean"] < 3.0
