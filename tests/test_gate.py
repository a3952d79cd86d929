"""Release gate: policy parsing and validation, verdicts on interval bounds, exit codes of `mia-guard gate`."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from audit_histories import ATTACKS, audited

from mia_guard.cli import main
from mia_guard.gate import (
    RULES,
    GateDecision,
    ReleasePolicy,
    evaluate_report,
    evaluate_result,
    example_policy_path,
)
from mia_guard.report.files import build_report, load_report, write_report


@pytest.fixture(scope="module")
def leaky():
    """Members' NLL clearly lower: every attack's AUC well above 0.9."""
    return audited({0: 0.0, 100: 0.6})


@pytest.fixture(scope="module")
def clean():
    """Members and non-members drawn alike: AUC near 0.5."""
    return audited({0: 0.0, 100: 0.0})


@pytest.fixture(scope="module")
def reports(leaky, clean, tmp_path_factory):
    out = {}
    for name, auditor in (("leaky", leaky), ("clean", clean)):
        directory = tmp_path_factory.mktemp(name)
        out[name] = write_report(auditor.history, directory, canaries=auditor.canaries)["json"]
    return out


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def gate(report: Path, policy: Path, *extra: str) -> int:
    return main(["gate", str(report), "--policy", str(policy), *extra])


# ------------------------------------------------------------------ the three outcomes through the CLI


def test_clean_model_is_released(reports, tmp_path, capsys):
    policy = write_policy(tmp_path, 'max_auc = 0.7\nmax_advantage = 0.3\n[max_tpr_at_fpr]\n"0.1" = 0.3\n')
    assert gate(reports["clean"], policy) == 0
    out = capsys.readouterr().out
    assert "PASS -> RELEASE (exit 0)" in out
    assert out.count("pass: ") == 3


def test_leaky_model_is_blocked(reports, tmp_path, capsys):
    policy = write_policy(tmp_path, 'max_auc = 0.7\n[max_tpr_at_fpr]\n"0.01" = 0.05\n')
    assert gate(reports["leaky"], policy) == 1
    out = capsys.readouterr().out
    assert "BLOCKED -> DO NOT RELEASE (exit 1)" in out
    assert "lower bound" in out and "> limit max_auc = 0.7" in out


def test_inconclusive_blocks_by_default_and_passes_when_the_policy_says_so(reports, tmp_path, capsys):
    # 0.1% FPR needs 1000 non-members; these canaries have about 200
    policy = write_policy(tmp_path, '[max_tpr_at_fpr]\n"0.001" = 0.5\n')
    assert gate(reports["clean"], policy) == 1
    out = capsys.readouterr().out
    assert "INCONCLUSIVE -> DO NOT RELEASE" in out and "needs >= 1000 non-members" in out
    policy = write_policy(tmp_path, 'on_inconclusive = "pass"\n[max_tpr_at_fpr]\n"0.001" = 0.5\n')
    assert gate(reports["clean"], policy) == 0
    assert "INCONCLUSIVE -> RELEASE" in capsys.readouterr().out


def test_json_output_is_the_decision(reports, tmp_path, capsys):
    policy = write_policy(tmp_path, "max_auc = 0.7\n")
    assert gate(reports["leaky"], policy, "--json") == 1
    decision = GateDecision.from_dict(json.loads(capsys.readouterr().out))
    assert decision.verdict == "blocked" and decision.exit_code == 1 and not decision.released
    assert decision.step == 100 and decision.policy["max_auc"] == 0.7
    assert decision.checks[0]["key"] == "max_auc" and decision.checks[0]["low"] > 0.7


def test_bundled_example_policy_gates_a_report(reports, tmp_path, capsys):
    assert gate(reports["leaky"], example_policy_path()) == 1
    # the example's TPR limit at 1% FPR needs more than 400 canaries for a clean model to pass clearly
    clean_large = audited({0: 0.0}, n=1000, seed=3)
    assert gate(write_report(clean_large.history, tmp_path)["json"], example_policy_path()) == 0
    capsys.readouterr()


# ------------------------------------------------------------------ cannot decide: exit 2


def _exit_2(capsys, report: Path, policy: Path, *fragments: str) -> None:
    assert gate(report, policy) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no verdict printed
    assert captured.err.startswith("mia-guard gate: error:")
    for fragment in fragments:
        assert fragment in captured.err


def test_missing_report_exits_2(tmp_path, capsys):
    _exit_2(capsys, tmp_path / "nope.json", example_policy_path(), "does not exist")


def test_truncated_report_exits_2(reports, tmp_path, capsys):
    text = reports["leaky"].read_text()
    (tmp_path / "report.json").write_text(text[: len(text) // 3])
    _exit_2(capsys, tmp_path / "report.json", example_policy_path(), "fails its checksum", "truncated")


def test_wrong_format_exits_2(leaky, tmp_path, capsys):
    leaky.history.save(tmp_path / "history.json")
    _exit_2(capsys, tmp_path / "history.json", example_policy_path(), "not a mia_guard report")


def test_missing_policy_exits_2(reports, tmp_path, capsys):
    _exit_2(capsys, reports["leaky"], tmp_path / "release.toml", "policy file", "does not exist")


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("max_acu = 0.6\n", ["unknown policy key 'max_acu'", "did you mean 'max_auc'"]),
        ('max_auc = "low"\n', ["max_auc must be a number", "'low'"]),
        ("max_auc = 1.5\n", ["max_auc = 1.5 can never be exceeded"]),
        ("max_auc = 0.4\n", ["max_auc must be >= 0.5"]),
        ("max_auc = 0.6\nconfidence = 1.5\n", ["confidence must be in [0.5, 1)"]),
        ('max_auc = 0.6\non_inconclusive = "maybe"\n', ['on_inconclusive must be "block" or "pass"']),
        ('[max_tpr_at_fpr]\n"0.1" = 0.05\n', ["below 0.1", "random guessing"]),
        ('[max_tpr_at_fpr]\n"one percent" = 0.05\n', ["'one percent' is not a number"]),
        ('attack = "strongest"\n', ["sets no limit"]),
        ("max_auc = = 0.6\n", ["not valid TOML"]),
        ('max_auc = 0.6\n[max_tpr_at_fpr]\n"0.05" = 0.2\n', ["FPR 5%", "measured TPR only at 0.1%, 1%, 10%"]),
        ("max_auc = 0.6\nconfidence = 0.99\n", ["requires 0.99 confidence", "0.95 intervals"]),
        ('max_auc = 0.6\nattack = "lossy"\n', ["attack 'lossy'", "did you mean 'loss'"]),
    ],
)
def test_invalid_policy_exits_2(reports, tmp_path, capsys, text, fragments):
    _exit_2(capsys, reports["leaky"], write_policy(tmp_path, text), *fragments)


# ------------------------------------------------------------------ semantics


def _bounds(auditor, attack):
    auc = auditor.history.last.metrics[attack].auc
    return auc.low, auc.high


def test_strongest_takes_the_worst_attack(leaky):
    # an attack whose whole interval lies below another's: a limit between them separates the two
    lows = {a: _bounds(leaky, a)[0] for a in ATTACKS}
    highs = {a: _bounds(leaky, a)[1] for a in ATTACKS}
    strong, weak = max(lows, key=lows.get), min(highs, key=highs.get)
    assert highs[weak] < lows[strong], "fixture: the attacks should differ clearly"
    limit = (highs[weak] + lows[strong]) / 2
    strongest = evaluate_result(ReleasePolicy(max_auc=limit), leaky.history.last)
    assert strongest.verdict == "blocked" and f"attack {strong!r}" in strongest.reasons[0]
    assert f"worst of {len(ATTACKS)} attacks" in strongest.reasons[0]
    only_weak = evaluate_result(ReleasePolicy(attack=weak, max_auc=limit), leaky.history.last)
    assert only_weak.verdict == "pass" and only_weak.exit_code == 0
    assert f"attack {weak!r}" in only_weak.reasons[0]


def test_interval_containing_the_limit_is_inconclusive(clean):
    low, high = _bounds(clean, "loss")
    limit = max((low + high) / 2, 0.5)
    assert low < limit < high
    decision = evaluate_result(ReleasePolicy(attack="loss", max_auc=limit), clean.history.last)
    assert decision.verdict == "inconclusive" and decision.exit_code == 1
    assert "contains the limit" in decision.reasons[0]
    relaxed = evaluate_result(ReleasePolicy(attack="loss", max_auc=limit, on_inconclusive="pass"), clean.history.last)
    assert relaxed.verdict == "inconclusive" and relaxed.exit_code == 0 and relaxed.released


def test_limits_at_the_bounds(clean):
    low, high = _bounds(clean, "loss")
    at_high = evaluate_result(ReleasePolicy(attack="loss", max_auc=high), clean.history.last)
    assert at_high.verdict == "pass"  # upper bound equal to the limit passes
    below_low = evaluate_result(ReleasePolicy(attack="loss", max_auc=max(low - 1e-6, 0.5)), clean.history.last)
    assert below_low.verdict == ("blocked" if low - 1e-6 >= 0.5 else "inconclusive")


def test_blocked_wins_over_inconclusive(leaky):
    policy = ReleasePolicy(max_auc=0.7, max_tpr_at_fpr={0.001: 0.5})
    decision = evaluate_result(policy, leaky.history.last)
    assert [c["verdict"] for c in decision.checks] == ["blocked", "inconclusive"]
    assert decision.verdict == "blocked"


def test_report_and_result_get_the_same_decision(leaky, reports):
    policy = ReleasePolicy(max_auc=0.7, max_advantage=0.3, max_tpr_at_fpr={"0.01": 0.05, 0.1: 0.3})
    from_report = evaluate_report(policy, load_report(reports["leaky"]))
    from_result = evaluate_result(policy, leaky.history.last)
    assert from_report.to_dict() == from_result.to_dict()


def test_skipped_named_attack_is_inconclusive(clean):
    result = clean.history.last
    report = build_report(clean.history)
    report["audits"][-1]["skipped"]["sequence_lira"] = "needs 4 audits of history"
    decision = evaluate_report(ReleasePolicy(attack="sequence_lira", max_auc=0.7), report)
    assert decision.verdict == "inconclusive"
    assert "'sequence_lira' was skipped (needs 4 audits of history)" in decision.reasons[0]
    assert result.skipped == {}  # the report is a copy


# ------------------------------------------------------------------ privacy figures


def _with_privacy(auditor, privacy: dict | None) -> dict:
    report = build_report(auditor.history)
    if privacy is not None:
        report["audits"][-1]["extras"] = {"privacy": privacy}
    return report


@pytest.mark.parametrize(
    "privacy, limit, verdict",
    [
        ({"epsilon_lb_one_run": 2.0}, 1.0, "blocked"),
        ({"epsilon_lb_one_run": 0.8}, 1.0, "pass"),
        ({"epsilon_lb_one_run": {"value": 0.5, "attack": "loss"}, "epsilon_lb_two_point": {"value": 1.4}}, 1.0, "blocked"),
        ({"epsilon_lb_one_run": 0.3}, 0.3, "pass"),  # a lower bound at the limit does not exceed it
        ({}, 1.0, "inconclusive"),
    ],
)
def test_epsilon_lower_bound_rule(clean, privacy, limit, verdict):
    decision = evaluate_report(ReleasePolicy(max_epsilon_lower_bound=limit), _with_privacy(clean, privacy))
    assert decision.verdict == verdict
    if verdict == "inconclusive":
        assert "did not compute the epsilon lower bound" in decision.reasons[0]
    else:
        assert "already a lower bound" in decision.reasons[0]


def test_epsilon_rule_notes_a_figure_that_was_not_computed(clean):
    decision = evaluate_report(ReleasePolicy(max_epsilon_lower_bound=1.0), _with_privacy(clean, {"epsilon_lb_two_point": 0.2}))
    assert decision.verdict == "pass" and "epsilon_lb_one_run not computed" in decision.reasons[0]


@pytest.mark.parametrize(
    "figure, verdict",
    [
        ({"value": 0.30, "low": 0.22, "high": 0.38, "confidence": 0.95}, "blocked"),
        ({"value": 0.10, "low": 0.05, "high": 0.19, "confidence": 0.95}, "pass"),
        ({"value": 0.18, "low": 0.12, "high": 0.26, "confidence": 0.95}, "inconclusive"),
        ({"value": None, "low": None, "high": None, "confidence": 0.95, "note": "no member was prompted"}, "inconclusive"),
    ],
)
def test_extraction_rate_rule_judges_the_interval(clean, figure, verdict):
    report = _with_privacy(clean, {"extraction_rate": figure})
    decision = evaluate_report(ReleasePolicy(max_extraction_rate=0.2), report)
    assert decision.verdict == verdict
    if figure["value"] is None:
        assert "no member was prompted" in decision.reasons[0]


def test_figure_without_interval_is_not_judged_and_never_releases(clean):
    report = _with_privacy(clean, {"exposure_max": 25.0})
    for on_inconclusive in ("block", "pass"):
        decision = evaluate_report(ReleasePolicy(max_exposure=20.0, on_inconclusive=on_inconclusive), report)
        assert decision.verdict == "inconclusive" and decision.exit_code == 1
        assert "no interval reported" in decision.reasons[0] and decision.checks[0]["fail_closed"]


def test_privacy_figure_at_lower_confidence_cannot_be_judged(clean):
    report = _with_privacy(clean, {"extraction_rate": {"value": 0.1, "low": 0.05, "high": 0.2, "confidence": 0.9}})
    with pytest.raises(ValueError, match="0.9 interval but the policy requires 0.95"):
        evaluate_report(ReleasePolicy(max_extraction_rate=0.3), report)


def test_malformed_privacy_figure_is_an_error(clean):
    with pytest.raises(ValueError, match=r"extras.privacy.exposure_max must be a number, null or a figure object"):
        evaluate_report(ReleasePolicy(max_exposure=5.0), _with_privacy(clean, {"exposure_max": "high"}))


# ------------------------------------------------------------------ policy objects


def test_example_policy_loads_and_round_trips():
    policy = ReleasePolicy.example()
    assert policy.attack == "strongest" and policy.on_inconclusive == "block"
    assert policy.max_auc == 0.6 and policy.max_tpr_at_fpr == {0.01: 0.05, 0.1: 0.25}
    assert policy.max_exposure is None  # commented out in the example
    assert ReleasePolicy.from_dict(policy.to_dict()) == policy
    assert json.loads(json.dumps(policy.to_dict())) == policy.to_dict()


def test_every_rule_key_is_a_policy_key_and_documented():
    docs = (Path(__file__).parents[1] / "docs" / "gate.md").read_text()
    for rule in RULES:
        assert getattr(ReleasePolicy(**{rule.key: _valid_limit(rule)}), rule.key) is not None
        assert f"`{rule.key}`" in docs


def _valid_limit(rule):
    return {0.01: 0.5} if rule.per_fpr else min(rule.limits[1] - 0.01, 1.0)


def test_check_compatible_reports_what_to_change():
    policy = ReleasePolicy(max_tpr_at_fpr={0.001: 0.01}, confidence=0.95)
    policy.check_compatible(fprs=[0.001, 0.01], confidence=0.99)
    with pytest.raises(ValueError, match=r"Auditor\(fprs=...\)"):
        policy.check_compatible(fprs=[0.01], confidence=0.95)
    with pytest.raises(ValueError, match=r"Auditor\(confidence=0.95\)"):
        policy.check_compatible(fprs=[0.001], confidence=0.9)


def test_decision_round_trips_and_explains_on_one_screen(leaky):
    policy = ReleasePolicy(max_auc=0.7, max_advantage=0.3, max_tpr_at_fpr={0.01: 0.05, 0.1: 0.3})
    decision = evaluate_result(policy, leaky.history.last)
    assert GateDecision.from_dict(json.loads(json.dumps(decision.to_dict()))).to_dict() == decision.to_dict()
    text = decision.explain()
    assert len(text.splitlines()) == 3 + len(decision.reasons) <= 24
    assert text.startswith("mia-guard gate: BLOCKED")
    for reason in decision.reasons:
        assert reason in text
    with pytest.raises(ValueError, match="unknown verdict"):
        GateDecision.from_dict({**decision.to_dict(), "verdict": "maybe"})


# ------------------------------------------------------------------ the installed console script


def test_console_script_exit_codes(reports, tmp_path):
    script = shutil.which("mia-guard", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if script is None:
        pytest.skip("the mia-guard console script is not installed (pip install -e .)")
    policy = write_policy(tmp_path, "max_auc = 0.7\n")
    runs = {
        name: subprocess.run([script, "gate", str(path), "--policy", str(policy)], capture_output=True, text=True)
        for name, path in (("clean", reports["clean"]), ("leaky", reports["leaky"]), ("missing", tmp_path / "no.json"))
    }
    assert runs["clean"].returncode == 0 and "RELEASE" in runs["clean"].stdout
    assert runs["leaky"].returncode == 1 and "BLOCKED" in runs["leaky"].stdout
    assert runs["missing"].returncode == 2 and "does not exist" in runs["missing"].stderr


def test_custom_policy_example_judges_every_audit(leaky, tmp_path, capsys):
    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "custom_policy.py"))
    leaky.history.save(tmp_path / "history.json")
    assert example["main"]([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    verdicts = dict(line.split(": ") for line in out.splitlines() if line.startswith("step "))
    assert verdicts["step       0"] != "blocked" and verdicts["step     100"] == "blocked"
    assert load_report(tmp_path / "report.json")["gate"]["verdict"] == "blocked"


@pytest.mark.parametrize(
    "value,low,high,verdict", [(26.0, 22.0, 30.0, "blocked"), (15.0, 10.0, 19.0, "pass"), (21.0, 15.0, 30.0, "inconclusive")]
)
def test_float_privacy_figure_is_judged_on_its_sibling_interval(clean, value, low, high, verdict):
    """The privacy analysis writes plain floats with `<name>_low` / `<name>_high` beside them."""
    report = _with_privacy(clean, {"exposure_max": value, "exposure_max_low": low, "exposure_max_high": high})
    decision = evaluate_report(ReleasePolicy(max_exposure=20.0), report)
    assert decision.checks[0]["verdict"] == verdict


# ------------------------------------------------------------------ minimum evidence and failing closed


def test_evidence_options_round_trip_and_are_documented():
    policy = ReleasePolicy(max_auc=0.7, min_canaries_per_class=10, max_invalid_share=0.2)
    assert ReleasePolicy.from_dict(policy.to_dict()) == policy
    assert ReleasePolicy(max_auc=0.7).min_canaries_per_class == 25
    docs = (Path(__file__).parents[1] / "docs" / "gate.md").read_text()
    for key in ("min_canaries_per_class", "max_invalid_share", "on_inconclusive"):
        assert f"`{key}`" in docs


@pytest.mark.parametrize("bad", [{"min_canaries_per_class": True}, {"min_canaries_per_class": 0},
                                 {"max_invalid_share": -0.1}, {"max_invalid_share": 1.0}])
def test_evidence_options_are_validated(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ReleasePolicy(max_auc=0.7, **bad)


def test_too_few_canaries_never_pass_but_blocked_stays_blocked(leaky, clean):
    strict = dict(min_canaries_per_class=1000, on_inconclusive="pass")
    passing = evaluate_result(ReleasePolicy(max_auc=0.9, **strict), clean.history.last)
    assert passing.verdict == "inconclusive" and passing.exit_code == 1
    assert passing.checks[-1]["key"] == "min_canaries_per_class" and passing.checks[-1]["fail_closed"]
    assert "the gate fails closed whatever on_inconclusive says" in passing.explain()
    blocked = evaluate_result(ReleasePolicy(max_auc=0.7, **strict), leaky.history.last)
    assert blocked.verdict == "blocked" and blocked.exit_code == 1


def test_a_result_with_malformed_figures_is_refused(clean):
    import copy

    result = copy.deepcopy(clean.history.last)
    auc = result.metrics["loss"].auc
    result.metrics["loss"].auc = type(auc)(0.9, 0.2, 0.4, auc.confidence)
    with pytest.raises(ValueError, match=r"metrics.loss.auc value 0.9 lies outside its interval \[0.2, 0.4\]"):
        evaluate_result(ReleasePolicy(max_auc=0.7), result)


def test_decision_dicts_without_fail_closed_still_load(leaky):
    decision = evaluate_result(ReleasePolicy(max_auc=0.7), leaky.history.last).to_dict()
    for check in decision["checks"]:
        check.pop("fail_closed")
    assert GateDecision.from_dict(decision).explain().startswith("mia-guard gate: BLOCKED")
