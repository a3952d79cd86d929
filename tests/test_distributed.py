"""Distributed audits: sharding, and two-process runs (gloo, CPU) launched with torchrun.

The two-process runs (tests/ddp_scripts/) go through the real Hugging Face Trainer under
DDP and a plain loop under FSDP (``fully_shard``); their audit figures must equal a
single-process audit of the same weights, only rank 0 may write, every rank must see the
same figures and decisions, and an odd canary count (shards of unequal size) must not hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trainer_runs import canaries

from mia_guard import AuditHistory, Auditor, AuditResult, CanarySet
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.scoring.distributed import shard_rows

SCRIPTS = Path(__file__).parent / "ddp_scripts"
#: A hang (one rank waiting in a collective the other never joins) fails the test after this long.
LAUNCH_TIMEOUT_S = 300


def torchrun(script: str, *args: str | os.PathLike) -> None:
    """Run ``script`` on 2 CPU processes (gloo); fails with the output on error or hang."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(SCRIPTS / script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{script} did not finish in {LAUNCH_TIMEOUT_S} s (a rank hangs in a collective?)\n{err.stdout}")
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"


def assert_same_figures(got: AuditResult, expected: AuditResult, atol: float = 1e-5) -> None:
    """Scores and every metric estimate (value and interval) of two audits agree to ``atol``."""
    assert got.step == expected.step
    assert sorted(got.metrics) == sorted(expected.metrics)
    for name, scores in expected.scores.items():
        np.testing.assert_allclose(got.scores[name], scores, atol=atol, rtol=0, err_msg=name)
        a, b = got.metrics[name], expected.metrics[name]
        for est_a, est_b in [(a.auc, b.auc), (a.advantage, b.advantage)] + [
            (a.tpr_at_fpr[f], b.tpr_at_fpr[f]) for f in b.tpr_at_fpr
        ]:
            np.testing.assert_allclose(
                [est_a.value, est_a.low, est_a.high], [est_b.value, est_b.low, est_b.high], atol=atol, err_msg=name
            )
    np.testing.assert_allclose(got.member_nll.value, expected.member_nll.value, atol=atol)
    np.testing.assert_allclose(got.nonmember_nll.value, expected.nonmember_nll.value, atol=atol)


def rank_files(directory: Path) -> list[dict]:
    return [json.loads((directory / f"rank{r}.json").read_text()) for r in range(2)]


def assert_ranks_agree(seen: list[dict]) -> None:
    """Rank 1 recorded exactly rank 0's figures (broadcast), and only rank 0 wrote a report."""
    assert seen[0]["results"] == seen[1]["results"]
    assert seen[1]["report_files"] == []


def assert_one_set_of_logs(mia_dir: Path, steps: list[int]) -> None:
    lines = [json.loads(line) for line in (mia_dir / "audits.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == steps  # one line per audit, not one per rank
    assert AuditHistory.load(mia_dir / "history.json").steps == steps
    assert not list(mia_dir.glob(".*"))  # no temp or probe files left behind


# ---------------------------------------------------------------------------- sharding
@pytest.mark.parametrize(("n", "world"), [(33, 2), (7, 3), (2, 4), (64, 8)])
def test_shards_cover_every_canary_once_with_sizes_differing_by_at_most_one(n, world):
    lengths = np.random.default_rng(n).integers(5, 60, size=n)
    shards = shard_rows(lengths, world)
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    if n >= 2 * world:  # dealt by length: the shards' token counts stay close
        tokens = [int(lengths[s].sum()) for s in shards]
        assert max(tokens) - min(tokens) <= int(lengths.max())


# ---------------------------------------------------------------------------- DDP through the Trainer
@pytest.fixture(scope="module")
def ddp_trainer_runs(tmp_path_factory, trained_lm) -> Path:
    out = tmp_path_factory.mktemp("ddp_trainer")
    torchrun("trainer_ddp.py", out, trained_lm.directory)
    return out


def test_ddp_trainer_audits_equal_single_process_audits_of_the_same_weights(ddp_trainer_runs):
    from transformers import GPT2LMHeadModel

    run = ddp_trainer_runs / "curve"
    history = AuditHistory.load(run / "mia" / "history.json")
    assert history.steps == [0, 2, 4]
    auditor = Auditor(canaries(33), byte_tokenizer())  # one process, every canary
    weights = {
        0: tiny_gpt2(n_layer=1, n_embd=32, dropout=0.1, seed=0),  # the run's initial model
        2: GPT2LMHeadModel.from_pretrained(run / "checkpoint-2"),
        4: GPT2LMHeadModel.from_pretrained(run / "checkpoint-4"),
    }
    for result in history:
        assert_same_figures(result, auditor.audit(weights[result.step], result.step))
    assert_ranks_agree(rank_files(run))
    assert_one_set_of_logs(run / "mia", [0, 2, 4])
    assert len(list((run / "tb").glob("*.mia_guard"))) == 1  # one TensorBoard event file
    assert (run / "mia" / "report.json").exists()


def test_ddp_trainer_resumed_from_a_checkpoint_continues_the_same_curve(ddp_trainer_runs):
    original = AuditHistory.load(ddp_trainer_runs / "curve" / "mia" / "history.json")
    resumed = AuditHistory.load(ddp_trainer_runs / "resume" / "mia" / "history.json")
    assert resumed.steps == original.steps == [0, 2, 4]  # not re-audited at the checkpoint step
    for got, expected in zip(resumed, original):
        assert_same_figures(got, expected, atol=1e-6)
    seen = rank_files(ddp_trainer_runs / "resume")
    assert [r["step"] for r in seen[1]["results"]] == [0, 2, 4]  # rank 1 holds the resumed curve too
    assert_one_set_of_logs(ddp_trainer_runs / "resume" / "mia", [0, 2, 4])


def test_ddp_trainer_stops_every_rank_on_a_blocked_verdict(ddp_trainer_runs, trained_lm):
    from transformers import GPT2LMHeadModel

    run = ddp_trainer_runs / "stop"
    seen = rank_files(run)
    for rank in seen:  # both ranks stopped at the same step, with the same verdict
        assert (rank["global_step"], rank["stopped_early"], rank["verdicts"]) == (2, True, {"2": "blocked"})
    assert_ranks_agree(seen)
    assert_one_set_of_logs(run / "mia", [2])
    trained = trained_lm.canaries
    subset = CanarySet(trained.canaries[:127], trained.is_member[:127], kind=trained.kind, seed=trained.seed,
                       split="custom", template=trained.template)
    single = Auditor(subset, byte_tokenizer()).audit(GPT2LMHeadModel.from_pretrained(run / "final"), 2)
    assert_same_figures(AuditHistory.load(run / "mia" / "history.json").last, single)


# ---------------------------------------------------------------------------- FSDP, plain loop
def test_fsdp_loop_audits_equal_single_process_audits_of_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    torchrun("fsdp_loop.py", tmp_path)
    history = AuditHistory.load(tmp_path / "mia" / "history.json")
    assert history.steps == [0, 2, 4]
    auditor = Auditor(canaries(33), byte_tokenizer())
    for result in history:
        model = tiny_gpt2(n_layer=2, n_embd=32, seed=0)
        model.load_state_dict(load_file(tmp_path / f"weights-{result.step}.safetensors"))
        assert_same_figures(result, auditor.audit(model, result.step))
    assert_ranks_agree(rank_files(tmp_path))
    assert_one_set_of_logs(tmp_path / "mia", [0, 2, 4])



def test_failed_audits_are_agreed_by_every_rank_without_a_hang(tmp_path):
    """Evaluation failing on rank 0 (NaN logits) and scoring failing on rank 1 only: both ranks
    skip the same audits, record the same failures, and training goes on."""
    torchrun("failing_loop.py", tmp_path)
    seen = rank_files(tmp_path)
    assert seen[0]["steps"] == seen[1]["steps"] == [0, 3]
    assert [f["step"] for f in seen[0]["failures"]] == [f["step"] for f in seen[1]["failures"]] == [1, 2]
    assert "non-finite logits" in seen[0]["failures"][0]["reason"] == seen[1]["failures"][0]["reason"]
    assert "failed on another process of the run" in seen[0]["failures"][1]["reason"] == seen[1]["failures"][1]["reason"]
    assert [f["step"] for f in AuditHistory.load(tmp_path / "mia" / "history.json").failures] == [1, 2]
