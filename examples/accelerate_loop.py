"""mia_guard in an Accelerate training loop, on one process or many (DDP). One CPU process:
about 110 s of CPU time (measured on a shared 2-core machine; 160 s wall there).

The loop of ``examples/plain_loop.py`` with ``accelerate``: the model, optimizer and
data loader go through ``accelerator.prepare`` and the AuditLoop is built after the
``Accelerator``, so it knows the processes. Under several processes every one of them
calls ``start``/``step``/``finish`` with the same step: each scores its shard of the
canaries, rank 0 evaluates and writes the files, and ``step`` returns the same answer
everywhere, so all processes stop together.

    python examples/accelerate_loop.py --cpu                      # one process
    accelerate launch examples/accelerate_loop.py                 # as configured (GPUs: DDP)
    torchrun --standalone --nproc_per_node 2 examples/accelerate_loop.py --cpu   # 2 CPU processes (gloo)

Options: ``--steps 300 --every 100 --canaries 128 --out accelerate_loop_out``.
"""

import argparse
from typing import Iterator

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from mia_guard import CanarySet
from mia_guard.callbacks import AuditLoop
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize


def forever(loader: DataLoader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--canaries", type=int, default=128)
    parser.add_argument("--out", default="accelerate_loop_out")
    parser.add_argument("--cpu", action="store_true", help="train on CPU even where a GPU is available")
    args = parser.parse_args()

    accelerator = Accelerator(cpu=args.cpu)
    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    canaries = CanarySet.generate(args.canaries, "code_credential", seed=0)  # the same on every process
    texts = canaries.insert_into(stdlib_corpus(max_chars=1000 * 120), repetitions=8)
    loader = DataLoader(
        tokenize(texts, tokenizer, max_length=128), batch_size=16, shuffle=True, collate_fn=CausalLMCollator()
    )
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    audits = AuditLoop(  # after Accelerator(): rank 0 writes, every process scores a shard
        canaries, tokenizer, every_n_steps=args.every, output_dir=f"{args.out}/mia", logging_dir=f"{args.out}/runs"
    )

    audits.start(model)  # step 0: the untrained model is the reference
    model.train()
    step = 0
    for step, batch in zip(range(1, args.steps + 1), forever(loader)):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if audits.step(model, step):  # the same answer on every process
            break
    audits.finish(model, step)
    if accelerator.is_main_process:
        print(audits.history.last.table())
        print(f"report: {audits.report_paths['markdown']}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
