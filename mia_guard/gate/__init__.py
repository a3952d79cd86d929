"""Release gate: a ReleasePolicy (TOML) judged on the bounds of the final audit's intervals.

A policy sets limits on figures of the final audit. Each limit is a *check*; a check
reads one or more figures (one per attack for attack figures) and judges each on its
confidence interval:

* ``blocked``      the interval's lower bound exceeds the limit (leakage shown);
* ``pass``         the upper bound is at or below the limit (leakage ruled out);
* ``inconclusive`` the interval contains the limit, or the figure cannot be resolved
  (NaN value, e.g. TPR at 0.1% FPR with fewer than 1000 non-members) or was not computed.

Figures that are themselves lower bounds (the epsilon lower bounds) have no interval:
their value is the bound, so they block above the limit and pass otherwise. A check
over several figures takes the worst (blocked > inconclusive > pass); with
``attack = "strongest"`` every attack is judged and the worst one decides.

Overall: ``blocked`` if any check blocks, else ``inconclusive`` if any check is
inconclusive, else ``pass``. Exit codes: 0 release (pass, or inconclusive under
``on_inconclusive = "pass"``), 1 blocked (including inconclusive under the default
``on_inconclusive = "block"``). Missing or invalid input raises (the CLI exits 2): the
gate fails closed and never guesses.

The rule table :data:`~mia_guard.gate.rules.RULES` maps each policy key to the figure it
reads; adding a key is one :class:`~mia_guard.gate.rules.Rule` entry. Nothing here
imports torch: ``mia-guard gate`` stays light.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "RULES": "mia_guard.gate.rules",
    "Rule": "mia_guard.gate.rules",
    "ReleasePolicy": "mia_guard.gate.policy",
    "example_policy_path": "mia_guard.gate.policy",
    "EXIT_RELEASE": "mia_guard.gate.decision",
    "EXIT_BLOCKED": "mia_guard.gate.decision",
    "GateDecision": "mia_guard.gate.decision",
    "evaluate_report": "mia_guard.gate.decision",
    "evaluate_result": "mia_guard.gate.decision",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
