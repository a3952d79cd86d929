"""Build a release policy in code, judge every audit of a run, and write the report with the verdict.

    python examples/custom_policy.py RUN_DIR          # RUN_DIR holds history.json
    python examples/custom_policy.py path/to/history.json

The history is what the Trainer callback writes (``history.json``) or what
``mia-guard audit --output FILE`` writes. The exit code is the gate's: 0 release, 1 blocked.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mia_guard import AuditHistory
from mia_guard.gate import ReleasePolicy, evaluate_result
from mia_guard.report.files import write_report


def build_policy() -> ReleasePolicy:
    """A stricter policy than the bundled example (mia_guard/data/release_policy.toml)."""
    return ReleasePolicy(
        attack="strongest",                      # every attack of the audit; the worst one decides
        confidence=0.95,                         # the audit's intervals must be at least 95% intervals
        max_auc=0.6,
        max_tpr_at_fpr={0.01: 0.03, 0.1: 0.2},   # FPR -> largest tolerated TPR
        max_advantage=0.15,
        on_inconclusive="block",                 # fail closed when the canaries cannot decide
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[0])
    history_path = source / "history.json" if source.is_dir() else source
    history = AuditHistory.load(history_path)
    if history.last is None:
        print(f"{history_path} holds no audits yet", file=sys.stderr)
        return 2

    policy = build_policy()
    policy.check_compatible(fprs=history.fprs, confidence=history.confidence)

    # The verdict along the leakage curve: where would this policy have stopped training?
    for result in history:
        decision = evaluate_result(policy, result)
        print(f"step {result.step:>7}: {decision.verdict}")

    decision = evaluate_result(policy, history.last)
    print()
    print(decision.explain())
    paths = write_report(history, history_path.parent, decision=decision, run_info={"policy": "examples/custom_policy.py"})
    print(f"\nreport: {paths['markdown']}")
    return decision.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
