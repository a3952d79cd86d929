"""Two-process FSDP (``fully_shard``, gloo, CPU) plain training loop with AuditLoop, for
tests/test_distributed.py.

    torchrun --standalone --nproc_per_node 2 tests/ddp_scripts/fsdp_loop.py OUT

A fresh 2-layer GPT-2 sharded block by block, 33 canaries (odd: shards of 17 and 16, so
one rank scores a dummy row to keep the sharded forward passes in step), audits at steps
0, 2 and 4. Rank 0 saves the full weights of every audited step to
``OUT/weights-<step>.safetensors``; the library writes ``OUT/mia`` (rank 0 only); each rank
writes what it saw to ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: trainer_runs

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from trainer_runs import canaries, training_rows  # noqa: E402

from mia_guard.callbacks import AuditLoop  # noqa: E402
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, tiny_gpt2  # noqa: E402

STEPS, EVERY = 4, 2


def save_full_weights(model: torch.nn.Module, path: Path) -> None:
    """Gather the sharded weights (a collective) and save them on rank 0."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    tokenizer = byte_tokenizer()
    canary_set = canaries(33)
    rows = training_rows(canary_set, tokenizer)
    model = tiny_gpt2(n_layer=2, n_embd=32, seed=0)
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    audits = AuditLoop(canary_set, tokenizer, every_n_steps=EVERY, output_dir=out / "mia")

    save_full_weights(model, out / "weights-0.safetensors")
    audits.start(model)
    order = np.random.default_rng(dist.get_rank()).permutation(len(rows))
    collate = CausalLMCollator()
    model.train()
    for step in range(1, STEPS + 1):
        batch = collate([rows[i] for i in order[(step - 1) * 8 : step * 8]])
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % EVERY == 0:
            save_full_weights(model, out / f"weights-{step}.safetensors")
        audits.step(model, step)
    audits.finish(model, STEPS)
    seen = {
        "rank": dist.get_rank(),
        "steps": audits.history.steps,
        "results": [r.to_dict(include_stats=False) for r in audits.history],
        "report_files": sorted(audits.report_paths),
    }
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
