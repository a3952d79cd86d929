"""Adversarial inputs for `mia-guard gate`: no doctored or degenerate report releases a model or crashes.

Every case of :data:`bad_reports.CASES` starts from a real report (a tiny GPT-2 trained
300 steps on credential canaries, audited by the real Auditor) and goes through the real
CLI; the exit code must be the documented one: 0 release, 1 blocked, 2 cannot decide.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from audit_histories import audited
from bad_reports import CASES, TRAINED_STEP, audit_report, build_reports, mutated, subset, write_document

from mia_guard.cli import main
from mia_guard.gate import example_policy_path
from mia_guard.report.schema import build_report


@pytest.fixture(scope="module")
def reports(trained_lm):
    return build_reports(trained_lm)


def run_gate(tmp_path: Path, document, policy: str | Path, *extra: str) -> int:
    report = write_document(tmp_path / "report.json", document)
    if isinstance(policy, str):
        (tmp_path / "policy.toml").write_text(policy)
        policy = tmp_path / "policy.toml"
    return main(["gate", str(report), "--policy", str(policy), *extra])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_report_gets_the_documented_exit_code(reports, tmp_path, capsys, case):
    code = run_gate(tmp_path, mutated(reports, case), case.policy)
    out, err = capsys.readouterr()
    assert code == case.exit_code, f"{case.name}: exit {code}\n{out}{err}"
    if case.exit_code == 2:
        assert out == "" and err.startswith("mia-guard gate: error:"), err
        assert "Traceback" not in err
        assert case.says in err, err
    else:
        assert err == ""
        assert case.says in out, out


def test_every_issue_case_is_in_the_suite():
    """The cases issue 15 lists as releasing or crashing, by name."""
    names = {case.name for case in CASES}
    for listed in (
        "auc -Infinity everywhere", "auc 5.0 in [-3, 0.1]", "auc confidence null, policy 0.99",
        "auc confidence NaN, policy 0.99", "auc without interval", "122 of 128 canaries invalid",
        "audits out of step order", "privacy never computed, release if unsure",
        "named attack skipped, release if unsure", "max_auc = 1.0 cannot be exceeded",
        "max_advantage = 1.0 cannot be exceeded", "epsilon lower bound -5", "attack entry without auc",
        "nested 100000 deep",
    ):
        assert listed in names


# ------------------------------------------------------------------ small audits of a real model


def _small_audit(lm, per_class: int, seed: int, attacks: tuple[str, ...]) -> dict:
    rng = np.random.default_rng(seed)
    members, non_members = np.flatnonzero(lm.canaries.is_member), np.flatnonzero(~lm.canaries.is_member)
    picked = sorted([*rng.choice(members, per_class, replace=False), *rng.choice(non_members, per_class, replace=False)])
    return audit_report(subset(lm.canaries, picked), lm.tokenizer, [(0, lm.untrained)], privacy=False, attacks=attacks)


def test_two_canaries_never_release(trained_lm, tmp_path, capsys):
    """1 member + 1 non-member: before, 12 of 20 pairs passed attack = "min_k" on zero-width intervals."""
    for seed in range(20):
        report = _small_audit(trained_lm, 1, seed, ("loss", "zlib", "min_k"))
        auc = report["audits"][-1]["metrics"]["min_k"]["auc"]
        assert auc["high"] - auc["low"] >= 0.5, auc  # no zero-width interval from two canaries
        for policy in ('attack = "min_k"\nmax_auc = 0.6\n', 'on_inconclusive = "pass"\nmax_auc = 0.9\n'):
            assert run_gate(tmp_path, report, policy) == 1
            assert "min_canaries_per_class" in capsys.readouterr().out


def test_six_canaries_never_release(trained_lm, tmp_path, capsys):
    for seed in range(20):
        report = _small_audit(trained_lm, 3, seed, ("loss", "zlib", "min_k", "min_k_plus_plus"))
        assert run_gate(tmp_path, report, 'on_inconclusive = "pass"\nmax_auc = 0.9\n') == 1
        assert "fewer than min_canaries_per_class = 25" in capsys.readouterr().out


def test_250_of_256_invalid_canaries_never_release(tmp_path, capsys):
    """A real audit where 250 canaries had NaN statistics: the 6 left decide nothing."""
    auditor = audited({0: 0.0}, n=256, nan_rows=tuple(range(250)))
    report = build_report(auditor.history)
    assert len(report["audits"][-1]["invalid_canaries"]) == 250
    assert run_gate(tmp_path, report, 'on_inconclusive = "pass"\nmax_auc = 0.99\nmin_canaries_per_class = 1\n') == 1
    out = capsys.readouterr().out
    assert "250 of 256 canaries (97.7%) had invalid" in out and "max_invalid_share = 0.05" in out


# ------------------------------------------------------------------ the bundled policy on real models


def test_bundled_policy_blocks_the_trained_model_and_not_the_untrained_one(reports, tmp_path, capsys):
    assert run_gate(tmp_path, reports["leaky"], example_policy_path()) == 1
    assert "BLOCKED" in capsys.readouterr().out
    # 128 canaries cannot show that an untrained model meets TPR <= 5% at 1% FPR: inconclusive, not released
    assert run_gate(tmp_path, reports["clean"], example_policy_path()) == 1
    assert "INCONCLUSIVE -> DO NOT RELEASE" in capsys.readouterr().out


# ------------------------------------------------------------------ the installed console script


def _console_script() -> str:
    script = shutil.which("mia-guard", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if script is None:
        pytest.skip("the mia-guard console script is not installed (pip install -e .)")
    return script


@pytest.mark.parametrize(
    "name", ["leaky report blocks", "clean report releases", "auc -Infinity everywhere", "nested 100000 deep",
             "attack entry without auc", "max_auc = 1.0 cannot be exceeded"],
)
def test_console_script_exit_codes_on_bad_reports(reports, tmp_path, name):
    case = next(c for c in CASES if c.name == name)
    report = write_document(tmp_path / "report.json", mutated(reports, case))
    (tmp_path / "policy.toml").write_text(case.policy)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([_console_script(), "gate", str(report), "--policy", str(tmp_path / "policy.toml")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == case.exit_code, run.stderr
    assert "Traceback" not in run.stderr
    assert case.says in (run.stderr if case.exit_code == 2 else run.stdout)


def test_json_output_marks_checks_that_fail_closed(reports, tmp_path, capsys):
    case = next(c for c in CASES if c.name == "privacy never computed, release if unsure")
    assert run_gate(tmp_path, mutated(reports, case), case.policy, "--json") == 1
    decision = json.loads(capsys.readouterr().out)
    assert decision["verdict"] == "inconclusive" and not decision["released"]
    assert decision["checks"][0]["fail_closed"] is True
    assert decision["step"] == TRAINED_STEP


def test_unreadable_policy_and_report_paths_exit_2(reports, tmp_path, capsys):
    report = write_document(tmp_path / "report.json", reports["leaky"])
    assert main(["gate", str(report), "--policy", str(tmp_path)]) == 2  # a directory, not a TOML file
    assert "cannot be read" in capsys.readouterr().err
    (tmp_path / "sub").mkdir()
    assert main(["gate", str(tmp_path / "sub"), "--policy", str(example_policy_path())]) == 2
    assert "does not exist" in capsys.readouterr().err
