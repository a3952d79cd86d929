"""Prefix sensitivity: how the attack figures change when only the continuation after a prefix is scored.

For in-distribution canaries (held-out documents, image token sequences), an attacker
who knows the beginning of a document prompts with it and looks at how well the model
continues. :func:`prefix_sensitivity` measures every attack with the first ``L``
tokens of each canary given as unscored context, for each ``L`` in ``prefix_lengths``
(``AuditConfig(prefix_tokens=L, reference="none")`` per length).

The model runs once: the per-token statistics of the continuation after ``L`` tokens
are the statistics of the whole canary with the first positions dropped
(:func:`drop_leading_positions`), because a causal model's prediction of token ``t``
depends only on tokens before ``t``, never on which tokens are scored.

All lengths are measured on the same canaries: canaries with fewer than
``max(prefix_lengths) + min_continuation`` scored tokens are left out of every row
(``dropped_canaries`` says how many), so the rows differ only in the prefix.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..canaries.canary_set import CanarySet
from ..canaries.encoding import encode_canaries
from ..scoring.token_stats import TokenStats
from .auditor import Auditor
from .config import AuditConfig, config_from_call

DEFAULT_PREFIX_LENGTHS = (0, 8, 16, 32)
DEFAULT_PREFIX_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


def drop_leading_positions(stats: TokenStats, skip: np.ndarray | Sequence[int]) -> TokenStats:
    """``stats`` with the first ``skip[i]`` scored positions of row ``i`` removed (rows stay left-aligned).

    The width shrinks to the longest remaining row (at least 1).
    """
    skip = torch.as_tensor(np.asarray(skip, dtype=np.int64))
    if skip.shape != (stats.num_canaries,) or bool((skip < 0).any()):
        raise ValueError(f"skip must be {stats.num_canaries} non-negative counts, got shape {tuple(skip.shape)}")
    width = stats.num_positions
    source = torch.arange(width).unsqueeze(0) + skip.unsqueeze(1)
    inside = source < width
    source = source.clamp(max=width - 1)
    mask = stats.mask.gather(1, source) & inside
    new_width = max(int(mask.sum(dim=1).max()), 1)
    shifted = {}
    for f in fields(TokenStats):
        value = getattr(stats, f.name).gather(1, source)
        shifted[f.name] = (value & mask if f.name == "mask" else torch.where(mask, value, torch.zeros_like(value)))
        shifted[f.name] = shifted[f.name][:, :new_width]
    return TokenStats(**shifted)


def _long_enough(canaries: CanarySet, tokenizer: Any, longest: int, min_continuation: int) -> np.ndarray:
    """Bool ``[N]``: canaries keeping at least ``min_continuation`` scored tokens after ``longest`` prefix tokens.

    A prefix of ``L`` tokens removes at most ``L`` scored tokens, so this is safe for every length.
    """
    encoded = encode_canaries(canaries, tokenizer)
    return encoded.num_scored - longest >= min_continuation


def _subset(canaries: CanarySet, keep: np.ndarray) -> CanarySet:
    if keep.all():
        return canaries
    return CanarySet(
        [c for c, k in zip(canaries.canaries, keep) if k],
        canaries.is_member[keep],
        kind=canaries.kind,
        seed=canaries.seed,
        split=canaries.split,
        template=canaries.template,
    )


def prefix_sensitivity(
    model: Any,
    canaries: CanarySet,
    tokenizer: Any = None,
    prefix_lengths: Sequence[int] = DEFAULT_PREFIX_LENGTHS,
    *,
    config: AuditConfig | Mapping[str, Any] | None = None,
    min_continuation: int = 1,
    step: int = 0,
    device: Any = None,
    **options: Any,
) -> dict:
    """Attack figures per prefix length, as a JSON-able dict (see the module docstring).

    Args:
        model: the audited causal LM.
        canaries: text or token canaries (templated canaries are scored on their secret
            only, whatever the prefix, and are refused).
        tokenizer: the training tokenizer (not needed for token canaries).
        prefix_lengths: numbers of leading canary tokens given as unscored context.
        config: the :class:`~mia_guard.audit.config.AuditConfig` of every row (its
            ``reference`` and ``prefix_tokens`` are set per row: no reference, ``L``);
            without one the attacks default to :data:`DEFAULT_PREFIX_ATTACKS`.
        min_continuation: canaries need at least this many scored tokens after the
            longest prefix, or they are left out of every row.
        step: the training step recorded with the figures.
        device: where the model runs while scoring.
        **options: fields of the config, e.g. ``attacks=["loss"], fprs=[0.1]``.

    Returns:
        ``{"prefix_lengths", "attacks", "confidence", "fprs", "n_canaries", "n_members",
        "n_nonmembers", "dropped_canaries", "min_continuation", "step", "rows"}``; each row
        holds ``prefix_tokens``, ``mean_scored_tokens``, ``member_nll`` /
        ``nonmember_nll`` and ``metrics`` (per attack, ``AttackMetrics.to_dict()``),
        ``skipped`` and ``notes``.
    """
    fixed = sorted({"reference", "prefix_tokens"} & set(options))
    if fixed:
        raise TypeError(f"prefix_sensitivity sets {' and '.join(fixed)} per row (no reference, L tokens); leave "
                        f"{'them' if len(fixed) > 1 else 'it'} out")
    if config is None:
        options.setdefault("attacks", DEFAULT_PREFIX_ATTACKS)
    config = config_from_call(prefix_sensitivity, config, options)
    if canaries.kind == "templated":
        raise ValueError(
            "prefix sensitivity is for in-distribution (text or token) canaries; templated canaries are always "
            "scored on their secret. Use CanarySet.from_texts(...) for documents"
        )
    lengths = sorted({int(length) for length in prefix_lengths})
    if not lengths or lengths[0] < 0:
        raise ValueError(f"prefix_lengths must be non-negative token counts, got {list(prefix_lengths)}")
    if min_continuation < 1:
        raise ValueError(f"min_continuation must be >= 1, got {min_continuation}")
    keep = _long_enough(canaries, tokenizer, lengths[-1], min_continuation)
    kept_members = canaries.is_member[keep]
    if kept_members.all() or not kept_members.any():
        raise ValueError(
            f"after leaving out the {int((~keep).sum())} canaries shorter than {lengths[-1]} + {min_continuation} "
            "tokens, no members or no non-members remain; use shorter prefixes or longer canaries"
        )
    kept = _subset(canaries, keep)
    auditors = {
        length: Auditor(kept, tokenizer, config=config.replace(reference="none", prefix_tokens=length), device=device)
        for length in lengths
    }
    base = auditors[lengths[0]]
    full_stats = base.score(model)
    rows = []
    for length, auditor in auditors.items():
        if not np.array_equal(auditor.encoded.end, base.encoded.end):
            raise RuntimeError("prefix lengths changed the canaries' scored ends; the tokenizer is not deterministic")
        stats = drop_leading_positions(full_stats, auditor.encoded.start - base.encoded.start)
        result = auditor.evaluate(stats, step)
        rows.append(
            {
                "prefix_tokens": length,
                "mean_scored_tokens": float(auditor.encoded.num_scored.mean()),
                "member_nll": result.member_nll.to_dict(),
                "nonmember_nll": result.nonmember_nll.to_dict(),
                "metrics": {name: m.to_dict() for name, m in result.metrics.items()},
                "skipped": dict(result.skipped),
                "notes": list(result.notes),
            }
        )
    return {
        "prefix_lengths": lengths,
        "attacks": list(config.attacks),
        "confidence": config.confidence,
        "fprs": list(config.fprs),
        "n_canaries": len(kept),
        "n_members": int(kept.is_member.sum()),
        "n_nonmembers": int((~kept.is_member).sum()),
        "dropped_canaries": int((~keep).sum()),
        "min_continuation": min_continuation,
        "step": int(step),
        "rows": rows,
    }


def _fmt(est: Mapping[str, Any] | None) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    if est.get("low") is None or est.get("high") is None:
        return f"{est['value']:.3f}"
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def prefix_markdown(result: dict, fpr: float | None = None) -> str:
    """Markdown tables of a :func:`prefix_sensitivity` result: AUC per attack and prefix length,
    and TPR at ``fpr`` (default: the largest FPR the result holds)."""
    fpr = max(result["fprs"]) if fpr is None else float(fpr)
    attacks = result["attacks"]
    level = f"{result['confidence']:.0%}"
    header = "| prefix tokens | scored tokens (mean) | " + " | ".join(attacks) + " |"
    rule = "|---|---|" + "---|" * len(attacks)

    def table(read) -> list[str]:
        lines = [header, rule]
        for row in result["rows"]:
            cells = []
            for name in attacks:
                metrics = row["metrics"].get(name)
                cells.append(_fmt(read(metrics)) if metrics else f"skipped ({row['skipped'].get(name, '?')})")
            lines.append(f"| {row['prefix_tokens']} | {row['mean_scored_tokens']:.1f} | " + " | ".join(cells) + " |")
        return lines

    def tpr(metrics: dict) -> dict | None:
        for key, est in metrics["tpr_at_fpr"].items():
            if abs(float(key) - fpr) < 1e-12:
                return est
        return None

    lines = [
        f"Attack figures when the first *L* tokens of each canary are given as context and only the "
        f"continuation is scored ({result['n_members']} members, {result['n_nonmembers']} non-members; "
        f"[{level} intervals]).",
    ]
    if result["dropped_canaries"]:
        lines.append(
            f"{result['dropped_canaries']} canaries shorter than the longest prefix plus "
            f"{result['min_continuation']} tokens are left out of every row."
        )
    lines += ["", "AUC:", ""] + table(lambda m: m["auc"])
    lines += ["", f"TPR at {fpr * 100:g}% FPR:", ""] + table(tpr)
    return "\n".join(lines)
