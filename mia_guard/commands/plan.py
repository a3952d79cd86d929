"""``mia-guard plan``: how many canaries an audit needs, and what a canary count can show.

Answers, before training:

* ``--epsilon X``: guesses and canaries the one-run audit needs to show ε ≥ X at the
  confidence (a perfect attack's minimum; real attacks need more);
* ``--fpr F``: non-member canaries needed to resolve TPR at FPR ``F``, and canaries to
  generate so coin-flip membership yields that many;
* ``--nonmembers N``: the smallest FPR ``N`` non-members resolve;
* ``--canaries N``: the largest ε the one-run audit can show and the FPRs it resolves,
  with a warning for every requested figure (``--epsilon``, ``--fpr`` or the limits of
  ``--policy``) beyond reach.

The privacy analysis evaluates the one-run bound on half the canaries (the other half
picks the attack and the guess counts); ``--fixed-guesses`` plans for an audit whose
attack and guess counts are fixed in advance, which evaluates every canary.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..cli import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="canaries needed for an epsilon bound or an FPR, and what a canary count can show",
        description="Plan an audit: canaries (and guesses) needed to show epsilon >= X at a confidence, "
        "non-members needed to resolve an FPR, and what N canaries can show. See docs/privacy.md.",
    )
    parser.add_argument("--epsilon", type=float, help="epsilon lower bound the audit should be able to show")
    parser.add_argument("--fpr", type=float, nargs="+", default=[], help="FPR levels whose TPR should be resolved")
    parser.add_argument("--canaries", type=int, help="canaries you plan to use: what can they show?")
    parser.add_argument("--nonmembers", type=int, help="non-member canaries: the smallest FPR they resolve")
    parser.add_argument("--policy", type=Path, help="release policy TOML: plan for its epsilon and FPR limits")
    parser.add_argument("--confidence", type=float, help="confidence level (default 0.95, or the policy's)")
    parser.add_argument("--delta", type=float, default=1e-5, help="delta of the epsilon bound (default 1e-5)")
    parser.add_argument(
        "--guess-fraction", type=float, default=1.0,
        help="share of the evaluated canaries the attack guesses on (default 1; attacks are often confident "
        "on only a few percent, e.g. 0.1)",
    )
    parser.add_argument(
        "--fixed-guesses", action="store_true",
        help="attack and guess counts fixed in advance (every canary evaluated, none kept for calibration)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    epsilon, fprs, confidence = args.epsilon, list(args.fpr), args.confidence
    if args.policy is not None:
        from ..gate import ReleasePolicy

        policy = ReleasePolicy.from_toml(args.policy)
        epsilon = epsilon if epsilon is not None else policy.limits.get("max_epsilon_lower_bound")
        fprs = sorted(set(fprs) | set(policy.limits.get("max_tpr_at_fpr", {})))
        confidence = confidence if confidence is not None else policy.confidence
    if epsilon is None and not fprs and args.canaries is None and args.nonmembers is None:
        raise InputError("nothing to plan: give --epsilon, --fpr, --canaries, --nonmembers or --policy")
    result = make_plan(
        epsilon=epsilon,
        fprs=fprs,
        canaries=args.canaries,
        nonmembers=args.nonmembers,
        confidence=0.95 if confidence is None else confidence,
        delta=args.delta,
        guess_fraction=args.guess_fraction,
        calibration_split=not args.fixed_guesses,
    )
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


def make_plan(
    *,
    epsilon: float | None = None,
    fprs: Sequence[float] = (),
    canaries: int | None = None,
    nonmembers: int | None = None,
    confidence: float = 0.95,
    delta: float = 1e-5,
    guess_fraction: float = 1.0,
    calibration_split: bool = True,
) -> dict[str, Any]:
    """The plan as a JSON-able dict: ``epsilon``, ``fprs``, ``nonmembers``, ``canaries`` sections and ``warnings``.

    With ``calibration_split`` the one-run bound is evaluated on half the canaries, so
    the canaries to generate are twice the evaluated ones.
    """
    from scipy import stats

    from ..stats.epsilon_one_run import canaries_needed_for_epsilon, one_run_epsilon_lower_bound
    from ..stats.metrics import min_resolvable_fpr, nonmembers_needed

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    split = 2 if calibration_split else 1
    plan: dict[str, Any] = {"confidence": confidence, "delta": delta, "calibration_split": calibration_split}
    warnings: list[str] = []
    if epsilon is not None:
        need = canaries_needed_for_epsilon(epsilon, confidence, delta, guess_fraction)
        plan["epsilon"] = dict(need, canaries_to_generate=split * need["canaries"])
    plan["fprs"] = []
    for fpr in fprs:
        n_neg = nonmembers_needed(fpr)
        # smallest N with P[Binomial(N, 1/2) >= n_neg] >= confidence: coin-flip membership
        total = 2 * n_neg
        while stats.binom.sf(n_neg - 1, total, 0.5) < confidence:
            total += 1
        plan["fprs"].append({"fpr": fpr, "nonmembers": n_neg, "canaries_to_generate": total})
    if nonmembers is not None:
        plan["nonmembers"] = {"nonmembers": nonmembers, "min_resolvable_fpr": min_resolvable_fpr(nonmembers)}
    if canaries is not None:
        if canaries < 2 * split:
            raise ValueError(f"--canaries must be at least {2 * split}, got {canaries}")
        m = canaries // split
        ceiling = one_run_epsilon_lower_bound(m, m, m, delta, confidence)
        r = int(math.floor(guess_fraction * m))
        ceiling_at_fraction = one_run_epsilon_lower_bound(m, r, r, delta, confidence) if r else 0.0
        expected_nonmembers = canaries // 2
        plan["canaries"] = {
            "canaries": canaries,
            "evaluated": m,
            "max_epsilon": ceiling,
            "max_epsilon_at_guess_fraction": ceiling_at_fraction,
            "guess_fraction": guess_fraction,
            "expected_nonmembers": expected_nonmembers,
            "min_resolvable_fpr": min_resolvable_fpr(max(expected_nonmembers, 1)),
        }
        if epsilon is not None and ceiling_at_fraction < epsilon:
            warnings.append(
                f"{canaries} canaries cannot show epsilon >= {epsilon:g}: even a perfect attack guessing on "
                f"{guess_fraction:.0%} of the {m} evaluated canaries reaches at most {ceiling_at_fraction:.3g}; "
                f"generate >= {plan['epsilon']['canaries_to_generate']}. A limit above what the audit can show "
                "never blocks on the epsilon bound."
            )
        for row in plan["fprs"]:
            if row["canaries_to_generate"] > canaries:
                warnings.append(
                    f"{canaries} canaries (about {expected_nonmembers} non-members) cannot resolve TPR at "
                    f"{row['fpr']:g} FPR, which needs >= {row['nonmembers']} non-members; generate >= "
                    f"{row['canaries_to_generate']}. That figure will be n/a (inconclusive at the gate)."
                )
    plan["warnings"] = warnings
    return plan


def format_plan(plan: dict[str, Any]) -> str:
    """The plan in words."""
    conf = f"{plan['confidence']:.0%} confidence"
    lines = []
    if "epsilon" in plan:
        e = plan["epsilon"]
        lines.append(
            f"epsilon >= {e['epsilon']:g} at {conf} (delta {e['delta']:g}), one-run audit: a perfect attack needs "
            f"{e['guesses']} correct guesses among {e['canaries']} evaluated canaries "
            f"(guessing on {e['guess_fraction']:.0%} of them); generate >= {e['canaries_to_generate']} canaries"
            + (" (half pick the attack and guess counts)." if plan["calibration_split"] else ".")
        )
        lines.append("  Real attacks are wrong on some guesses: plan for more.")
    for row in plan["fprs"]:
        lines.append(
            f"TPR at {row['fpr']:g} FPR: needs >= {row['nonmembers']} non-member canaries; generate >= "
            f"{row['canaries_to_generate']} so coin-flip membership gives that many with {conf}."
        )
    if "nonmembers" in plan:
        n = plan["nonmembers"]
        lines.append(f"{n['nonmembers']} non-members resolve FPRs down to {n['min_resolvable_fpr']:.3g}.")
    if "canaries" in plan:
        c = plan["canaries"]
        lines.append(
            f"{c['canaries']} canaries: the one-run audit ({c['evaluated']} evaluated) can show epsilon up to "
            f"{c['max_epsilon']:.3g} (every canary guessed right), {c['max_epsilon_at_guess_fraction']:.3g} guessing "
            f"on {c['guess_fraction']:.0%}; about {c['expected_nonmembers']} non-members resolve FPRs down to "
            f"{c['min_resolvable_fpr']:.3g}."
        )
    lines += [f"WARNING: {w}" for w in plan["warnings"]]
    return "\n".join(lines)
