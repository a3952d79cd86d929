"""``mia-guard plan``: canaries needed for an epsilon bound or an FPR, and what N canaries can show."""

from __future__ import annotations

import json
import math

import pytest
from scipy import special, stats

from mia_guard.cli import main
from mia_guard.commands.plan import make_plan


def test_epsilon_plan_matches_the_closed_form():
    plan = make_plan(epsilon=2.0, delta=0.0)
    guesses = math.ceil(math.log(0.05) / math.log(special.expit(2.0)))  # all guesses right: q^r <= 0.05
    assert plan["epsilon"]["guesses"] == guesses
    assert plan["epsilon"]["canaries_to_generate"] == 2 * guesses  # half calibrate, half are evaluated
    fixed = make_plan(epsilon=2.0, delta=0.0, calibration_split=False, guess_fraction=0.1)
    assert fixed["epsilon"]["canaries_to_generate"] == fixed["epsilon"]["canaries"] == 10 * guesses


def test_fpr_plan_accounts_for_coin_flip_membership():
    (row,) = make_plan(fprs=[0.01], confidence=0.9)["fprs"]
    assert row["nonmembers"] == 100
    n = row["canaries_to_generate"]
    assert stats.binom.sf(99, n, 0.5) >= 0.9 > stats.binom.sf(99, n - 1, 0.5)


def test_canary_count_shows_its_ceiling_and_warns_beyond_it():
    plan = make_plan(canaries=128, epsilon=4.0, fprs=[0.01, 0.1], delta=0.0)
    c = plan["canaries"]
    assert c["evaluated"] == 64
    assert c["max_epsilon"] == pytest.approx(special.logit(0.05 ** (1 / 64)), abs=1e-7)
    assert c["min_resolvable_fpr"] == pytest.approx(1 / 64)
    assert len(plan["warnings"]) == 2  # epsilon 4 (ceiling ~3.0) and FPR 1% (needs 100 non-members)
    assert "cannot show epsilon >= 4" in plan["warnings"][0] and "0.01 FPR" in plan["warnings"][1]
    assert make_plan(canaries=2000, epsilon=2.0, fprs=[0.1])["warnings"] == []


def test_cli_plan(tmp_path, capsys):
    assert main(["plan", "--epsilon", "3", "--canaries", "100"]) == 0
    out = capsys.readouterr().out
    assert "generate >=" in out and "WARNING: 100 canaries cannot show epsilon >= 3" in out

    policy = tmp_path / "policy.toml"
    policy.write_text('confidence = 0.9\nmax_epsilon_lower_bound = 1.0\nmax_tpr_at_fpr = { "0.001" = 0.01 }\n')
    assert main(["plan", "--policy", str(policy), "--canaries", "500", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["confidence"] == 0.9 and plan["epsilon"]["epsilon"] == 1.0
    assert [row["fpr"] for row in plan["fprs"]] == [0.001]
    assert len(plan["warnings"]) == 1 and "0.001 FPR" in plan["warnings"][0]

    assert main(["plan"]) == 2
    assert "nothing to plan" in capsys.readouterr().err
