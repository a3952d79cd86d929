"""Two-process DDP Trainer runs with MIAAuditCallback (gloo, CPU), for tests/test_distributed.py.

    torchrun --standalone --nproc_per_node 2 tests/ddp_scripts/trainer_ddp.py OUT TRAINED_LM_DIR

Run ``curve``: a fresh 1-layer GPT-2 and 33 canaries (odd: shards of 17 and 16), audits at
steps 0, 2 and 4 with a checkpoint at 2 and 4.
Run ``resume``: ``curve`` resumed from its checkpoint-2 (audit files copied to ``OUT/resume/mia``).
Run ``stop``: the memorizing model of the ``trained_lm`` fixture, 127 of its canaries
(odd again), a policy that blocks it and ``stop_on_blocked``: both ranks must stop at step 2.

The library writes ``OUT/<run>/mia`` and ``OUT/<run>/tb`` (rank 0 only). This script
writes what each rank saw to ``OUT/<run>/rank<r>.json`` and, on rank 0, the final model
to ``OUT/<run>/final``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: trainer_runs

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from mia_guard import CanarySet  # noqa: E402
from mia_guard.callbacks import MIAAuditCallback  # noqa: E402
from trainer_runs import canaries, make_trainer  # noqa: E402


def run(out: Path, callback: MIAAuditCallback, resume_from: Path | None = None, **trainer_options) -> None:
    trainer = make_trainer(out, [callback], ddp_backend="gloo", **trainer_options)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    rank = dist.get_rank()
    seen = {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "global_step": trainer.state.global_step,
        "stopped_early": callback.stopped_early,
        "results": [r.to_dict(include_stats=False) for r in callback.history],
        "verdicts": {str(s): d.verdict for s, d in callback.session.decisions.items()},
        "report_files": sorted(callback.report_paths),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    trainer.save_model(str(out / "final"))  # writes on rank 0 only


def main() -> None:
    torch.set_num_threads(1)
    out, trained_dir = Path(sys.argv[1]), Path(sys.argv[2])
    options = dict(progress=False)

    curve = MIAAuditCallback(
        canaries(33), every_n_steps=2, output_dir=out / "curve" / "mia", tensorboard=out / "curve" / "tb", **options
    )
    run(out / "curve", curve, max_steps=4, save_strategy="steps", save_steps=2)

    if dist.get_rank() == 0:  # the run's audit files as they were, for a run resumed from checkpoint-2
        shutil.copytree(out / "curve" / "mia", out / "resume" / "mia")
    dist.barrier()
    resumed = MIAAuditCallback(canaries(33), every_n_steps=2, output_dir=out / "resume" / "mia", tensorboard=False,
                               **options)
    run(out / "resume", resumed, resume_from=out / "curve" / "checkpoint-2", max_steps=4)

    from transformers import GPT2LMHeadModel

    trained = CanarySet.load(trained_dir / "canaries.json")
    subset = CanarySet(
        trained.canaries[:127], trained.is_member[:127], kind=trained.kind, seed=trained.seed, split="custom",
        template=trained.template,
    )
    stop = MIAAuditCallback(
        subset, every_n_steps=2, audit_on_train_begin=False, policy={"max_auc": 0.6}, stop_on_blocked=True,
        output_dir=out / "stop" / "mia", tensorboard=False, **options,
    )
    model = GPT2LMHeadModel.from_pretrained(trained_dir)
    run(out / "stop", stop, model=model, canary_set=subset, max_steps=10, learning_rate=1e-6)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise SystemExit("launch with torchrun --nproc_per_node 2")
    main()
