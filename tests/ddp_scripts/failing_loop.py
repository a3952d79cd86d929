"""Two-process (gloo, CPU) plain loop whose audits fail, for tests/test_distributed.py.

    torchrun --standalone --nproc_per_node 2 tests/ddp_scripts/failing_loop.py OUT

AuditLoop audits steps 0 to 3 of an untrained byte GPT-2 (the same weights on both ranks):

* step 1: every logit is NaN on both ranks, so rank 0's evaluation fails (non-finite logits)
  and the failure is broadcast;
* step 2: rank 1's forward pass raises while rank 0's succeeds, so rank 0 must not wait for
  rank 1's statistics in a collective (a hang fails the test);
* steps 0 and 3 succeed.

Each rank writes its history's steps and failures to ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: trainer_runs

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from trainer_runs import canaries  # noqa: E402

from mia_guard.callbacks import AuditLoop  # noqa: E402
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0)
    fault = {"step": 0}

    def hook(module, inputs, output):
        if fault["step"] == 1:
            return output * float("nan")
        if fault["step"] == 2 and rank == 1:
            raise RuntimeError("rank 1's forward pass broke")
        return output

    model.lm_head.register_forward_hook(hook)
    audits = AuditLoop(canaries(33), byte_tokenizer(), every_n_steps=1, output_dir=out / "mia", attacks=("loss",))
    audits.start(model)
    for step in (1, 2, 3):
        fault["step"] = step
        audits.step(model, step)
    seen = {"steps": audits.history.steps, "failures": audits.history.failures}
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
