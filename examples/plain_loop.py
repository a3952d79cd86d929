"""mia_guard in a plain PyTorch training loop (CPU: about 190 s of CPU time,
measured on a shared 2-core machine; 460 s wall there).

Plants 128 credential canaries in some training text, trains a tiny GPT-2 with a
hand-written loop and audits it every 100 steps with :class:`AuditLoop`:
``start`` before training (the reference audit), ``step`` after every optimizer step,
``finish`` at the end (final audit and report). Afterwards:

    tensorboard --logdir plain_loop_out/runs      # mia/... leakage curves
    cat plain_loop_out/mia/report.md              # the final report

    python examples/plain_loop.py [--steps 300] [--every 100] [--out plain_loop_out]
"""

import argparse
from typing import Iterator

import torch
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
    parser.add_argument("--out", default="plain_loop_out")
    args = parser.parse_args()
    torch.manual_seed(0)

    tokenizer = byte_tokenizer()
    canaries = CanarySet.generate(args.canaries, "code_credential", seed=0)  # about half become members
    texts = canaries.insert_into(stdlib_corpus(max_chars=1000 * 120), repetitions=8)
    loader = DataLoader(
        tokenize(texts, tokenizer, max_length=128), batch_size=16, shuffle=True, collate_fn=CausalLMCollator()
    )
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    audits = AuditLoop(
        canaries, tokenizer, every_n_steps=args.every, output_dir=f"{args.out}/mia", logging_dir=f"{args.out}/runs"
    )

    audits.start(model)  # step 0: the untrained model is the reference
    model.train()
    step = 0
    for step, batch in zip(range(1, args.steps + 1), forever(loader)):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if audits.step(model, step):  # True only with stop_on_blocked=True and a blocked verdict
            break
    audits.finish(model, step)
    print(audits.history.last.table())
    print(f"report: {audits.report_paths['markdown']}")


if __name__ == "__main__":
    main()
