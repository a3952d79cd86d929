"""The training-loop options the Hugging Face callback and the loop API share, validated once."""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..audit.auditor import Auditor


def resolve_audit_inputs(
    owner: str, canaries: Any, auditor: Any, every_n_steps: Any, stop_on_blocked: bool, policy: Any,
    configured: bool = False,
) -> Any:
    """Validate the training-loop options of a callback or loop (the audit options are
    :class:`~mia_guard.audit.config.AuditConfig`'s); returns the CanarySet (loaded if a
    path), a dict ``{set name: CanarySet}`` for named sets (a mapping of sets or paths),
    or ``None`` when an ``auditor`` is given instead. ``owner`` names the caller in
    errors; ``configured`` says whether a config or audit options were passed too."""
    if auditor is None and canaries is None:
        raise ValueError(f"{owner} needs the canaries (a CanarySet or a canary file) or an auditor")
    if auditor is not None and not isinstance(auditor, Auditor):
        raise TypeError(f"auditor must be a mia_guard.Auditor, got {type(auditor).__name__}")
    if auditor is not None and configured:
        raise TypeError(
            f"{owner} got an auditor and audit options; the auditor carries its own (auditor.config): pass "
            "either auditor=... or config=/options"
        )
    if every_n_steps is not None and (
        isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
    ):
        raise ValueError(
            f"every_n_steps must be a positive integer (audit every that many steps) or None, got {every_n_steps!r}"
        )
    if stop_on_blocked and policy is None:
        raise ValueError("stop_on_blocked=True needs a release policy (policy=ReleasePolicy or a TOML path)")
    if auditor is not None:
        if isinstance(canaries, Mapping):
            raise TypeError(f"{owner}: auditor= audits one canary set; give named canary sets without an auditor")
        return None
    if isinstance(canaries, Mapping):
        from ..report.report_set import check_set_name

        if not canaries:
            raise ValueError(f"{owner} got an empty mapping of canary sets; name at least one set")
        return {check_set_name(name): _canary_set(sets) for name, sets in canaries.items()}
    return _canary_set(canaries)


def _canary_set(canaries: Any) -> Any:
    from ..canaries.canary_set import CanarySet

    if isinstance(canaries, (str, os.PathLike)):
        canaries = CanarySet.load(canaries)
    if not isinstance(canaries, CanarySet):
        raise TypeError(
            f"canaries must be a CanarySet, a canary file path, or a dict of named sets, got {type(canaries).__name__}"
        )
    return canaries


def load_policy(policy: Any) -> Any:
    """A ``mia_guard.gate.ReleasePolicy`` from a policy, its dict or the path of its TOML file (``None`` passes)."""
    if policy is None:
        return None
    from ..gate import ReleasePolicy

    if isinstance(policy, ReleasePolicy):
        return policy
    if isinstance(policy, Mapping):
        return ReleasePolicy.from_dict(dict(policy))
    if isinstance(policy, (str, os.PathLike)):
        return ReleasePolicy.from_toml(policy)
    raise TypeError(f"policy must be a ReleasePolicy, a dict or a TOML path, got {type(policy).__name__}")
