"""``mia-guard audit``: audit a local model directory against a canary file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="audit a saved model on its canaries and print the leakage table",
        description="Load a model from a local directory (no hub access), score its canaries once, "
        "run the attacks and print AUC / TPR@FPR with confidence intervals.",
    )
    parser.add_argument("--model", required=True, type=Path, help="directory written by save_pretrained")
    parser.add_argument("--canaries", required=True, type=Path, help="canary file written by CanarySet.save")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the model directory)")
    parser.add_argument("--reference", type=Path, help="reference model directory for calibrated attacks")
    parser.add_argument("--attacks", nargs="+", help="attack names (default: the Auditor's defaults)")
    parser.add_argument("--fprs", nargs="+", type=float, help="FPR levels (default 0.001 0.01 0.1)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--step", type=int, default=0, help="training step to record (default 0)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--output", type=Path, default=Path("mia_audit.json"), help="history JSON to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..audit.auditor import DEFAULT_ATTACKS, DEFAULT_FPRS, Auditor
    from ..canaries.canary_set import CanarySet

    canaries = CanarySet.load(args.canaries)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_local_model(args.model, device)
    tokenizer = None if canaries.kind == "tokens" else load_local_tokenizer(args.tokenizer or args.model)
    auditor = Auditor(
        canaries,
        tokenizer,
        attacks=args.attacks or DEFAULT_ATTACKS,
        fprs=args.fprs or DEFAULT_FPRS,
        confidence=args.confidence,
        batch_size=args.batch_size,
        progress=True,
        reference="none",
    )
    if args.reference:
        auditor.set_reference(load_local_model(args.reference, device))
    result = auditor.audit(model, step=args.step)
    print(result.table())
    auditor.history.save(args.output)
    print(f"wrote {args.output}")
    return 0


def load_local_model(directory: Path, device: str):
    """A causal LM from a local ``save_pretrained`` directory, in eval mode (never downloads)."""
    from transformers import AutoModelForCausalLM

    if not directory.is_dir():
        raise InputError(f"model directory {directory} does not exist; pass the directory given to save_pretrained")
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a causal LM from {directory}: {err}") from err
    return model.to(device).eval()


def load_local_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot load a tokenizer from {directory}: {err}; pass --tokenizer DIR (the training tokenizer)"
        ) from err
