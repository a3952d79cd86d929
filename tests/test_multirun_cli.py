"""`mia-guard multirun` on audit histories of several runs of the same canaries.

The runs are real AuditHistory / CanarySet files (Auditor.evaluate on synthetic
TokenStats): every canary has its own difficulty (a per-canary offset of its token
confidence, the same in every run) that hides membership from a single run, and
members gain a little confidence. Reference runs of the same canaries with other
splits reveal each canary's offset, which is what multi-run LiRA exploits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from lira_synthetic import token_stats

from mia_guard import AuditHistory, Auditor, CanarySet
from mia_guard.canaries.canary_set import draw_membership
from mia_guard.cli import main
from mia_guard.experiments.demo_assets import byte_tokenizer

N_CANARIES = 200
POSITIONS = 12
GAIN = 0.6


@pytest.fixture(scope="module")
def base_canaries():
    return CanarySet.generate(N_CANARIES, "code_credential", seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def write_run(directory, canaries, tokenizer, run_seed, *, steps=(0, 100), include_stats=True):
    """An audited run: history.json (an audit per step, members gaining with the step) and canaries.json."""
    rng = np.random.default_rng([run_seed, 5])
    shared = np.random.default_rng(99)  # each canary's difficulty, the same in every run
    difficulty = shared.normal(0.0, 1.5, (len(canaries), 1)) + shared.normal(0.0, 0.5, (len(canaries), POSITIONS))
    auditor = Auditor(canaries, tokenizer, attacks=("loss", "lira_online"), reference="none", seed=run_seed)
    for step in steps:
        gain = GAIN * step / max(steps) * canaries.is_member[:, None]
        noise = rng.normal(0.0, 0.4, (len(canaries), POSITIONS))
        auditor.evaluate(token_stats(difficulty + gain + noise), step)
    directory.mkdir(parents=True, exist_ok=True)
    auditor.history.save(directory / "history.json", include_stats=include_stats)
    canaries.save(directory / "canaries.json")
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base_canaries, tokenizer):
    """Five runs of the same canaries, each with its own membership split; the first is the target."""
    root = tmp_path_factory.mktemp("runs")
    return [
        write_run(root / f"run{k}", base_canaries.with_membership(draw_membership(N_CANARIES, seed=k)), tokenizer, k)
        for k in range(5)
    ]


def cli(*args):
    return main(["multirun", *map(str, args)])


def test_multi_run_lira_beats_the_single_run_attacks_and_writes_json(runs, tmp_path, capsys):
    out = tmp_path / "multirun.json"
    assert cli(*runs, "--output", out) == 0
    printed = capsys.readouterr().out
    for name in ("multirun_seq_lira", "multirun_lira", "multirun_seq_lira_offline", "loss (target alone)"):
        assert name in printed
    assert "step 100" in printed
    data = json.loads(out.read_text())
    assert data["format"] == "mia_guard.multirun" and data["steps"] == [100] * 5
    metrics = data["result"]["metrics"]
    single = metrics["loss (target alone)"]["auc"]["value"]
    assert single < 0.75  # the per-canary difficulty hides membership from one run
    for name in ("multirun_seq_lira", "multirun_lira"):
        assert metrics[name]["auc"]["value"] > single + 0.15
        assert metrics[name]["n_members"] + metrics[name]["n_nonmembers"] == N_CANARIES
    assert len(data["result"]["scores"]["multirun_seq_lira"]) > 0


def test_step_option_picks_the_audits_at_that_step(runs, capsys):
    assert cli(*runs, "--step", 0) == 0
    printed = capsys.readouterr().out
    assert "step 0" in printed and "at steps [0, 0, 0, 0, 0]" in printed
    assert cli(*runs, "--step", 50) == 2
    err = capsys.readouterr().err
    assert "no audit at step 50" in err and "[0, 100]" in err


def test_a_single_run_is_refused(runs, capsys):
    assert cli(runs[0]) == 2
    assert "at least one reference run" in capsys.readouterr().err


def test_runs_with_other_canaries_are_refused(runs, tmp_path, tokenizer, capsys):
    other = CanarySet.generate(N_CANARIES, "code_credential", seed=7)  # other secrets
    stranger = write_run(tmp_path / "stranger", other, tokenizer, 7)
    assert cli(runs[0], runs[1], stranger) == 2
    err = capsys.readouterr().err
    assert "planted different canaries" in err and str(stranger) in err
    fewer = write_run(tmp_path / "fewer", CanarySet.generate(N_CANARIES // 2, "code_credential", seed=0), tokenizer, 8)
    assert cli(runs[0], fewer) == 2
    assert "100 templated canaries" in capsys.readouterr().err


def test_a_reference_with_the_targets_split_is_refused(runs, tmp_path, base_canaries, tokenizer, capsys):
    target_split = CanarySet.load(runs[0] / "canaries.json").is_member
    twin = write_run(tmp_path / "twin", base_canaries.with_membership(target_split), tokenizer, 11)
    assert cli(runs[0], runs[1], twin) == 2
    assert "exactly the target's membership split" in capsys.readouterr().err


def test_histories_without_token_statistics_are_refused(runs, tmp_path, base_canaries, tokenizer, capsys):
    split = draw_membership(N_CANARIES, seed=21)
    bare = write_run(tmp_path / "bare", base_canaries.with_membership(split), tokenizer, 21, include_stats=False)
    assert cli(runs[0], bare) == 2
    assert "without token statistics" in capsys.readouterr().err


def test_canary_files_are_required_and_must_belong_to_the_history(runs, tmp_path, capsys):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    AuditHistory.load(runs[1] / "history.json").save(lonely / "history.json")  # the history, no canary file
    assert cli(runs[0], lonely) == 2
    assert "canaries.json" in capsys.readouterr().err
    # explicit --canaries, one per run, in run order
    files = [runs[0] / "canaries.json", runs[1] / "canaries.json"]
    assert cli(runs[0], lonely, "--canaries", *files) == 0
    capsys.readouterr()
    assert cli(runs[0], lonely, "--canaries", files[0], files[0]) == 2  # the target's canaries for run 1
    assert "content hashes differ" in capsys.readouterr().err
    assert cli(runs[0], lonely, "--canaries", files[0]) == 2
    assert "one file per run" in capsys.readouterr().err


def test_canaries_with_nonfinite_statistics_are_left_out(runs, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    history = AuditHistory.load(runs[1] / "history.json")
    history.last.stats.confidence[3, 0] = float("nan")
    history.save(broken / "history.json")
    (broken / "canaries.json").write_bytes((runs[1] / "canaries.json").read_bytes())
    out = tmp_path / "out.json"
    assert cli(runs[0], broken, runs[2], runs[3], "--output", out) == 0
    assert "1 canaries had NaN/inf statistics" in capsys.readouterr().out
    result = json.loads(out.read_text())["result"]
    assert result["invalid_canaries"] == [3]
    assert result["metrics"]["multirun_lira"]["n_members"] + result["metrics"]["multirun_lira"]["n_nonmembers"] == (
        N_CANARIES - 1
    )
