"""Two-process (gloo, CPU) plain loop auditing two named canary sets, for tests/test_canary_sets.py.

    torchrun --standalone --nproc_per_node 2 tests/ddp_scripts/canary_sets_loop.py OUT

AuditLoop audits steps 0, 2 and 3 (the final audit, with extraction) of an untrained byte
GPT-2 (the same weights on both ranks) for the sets "credentials" and "pins"; each rank
writes its curves and the combined verdict to ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mia_guard import CanarySet
from mia_guard.callbacks import AuditLoop
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0)
    sets = {"credentials": CanarySet.generate(33, "code_credential", seed=0),
            "pins": CanarySet.generate(31, "pin_sentence", seed=1)}
    audits = AuditLoop(sets, byte_tokenizer(), every_n_steps=2, output_dir=out / "mia", attacks=("loss",),
                       fprs=(0.1,), policy={"max_auc": 0.99, "min_canaries_per_class": 5})
    audits.start(model)
    for step in (1, 2, 3):
        audits.step(model, step)
    audits.finish(model, 3)
    seen = {
        "steps": {name: h.steps for name, h in audits.history.items()},
        "auc": {name: h.last.metrics["loss"].auc.value for name, h in audits.history.items()},
        "extraction": {name: "extraction_rate" in h.last.extras.get("privacy", {}) for name, h in audits.history.items()},
        "verdict": audits.last_decision.verdict,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
