"""ReleasePolicy: the limits a release must stay under, read from TOML or a dict and
validated (unknown keys get a suggestion).
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from ..report.schema import pct
from .evidence import DEFAULT_MAX_INVALID_SHARE, DEFAULT_MIN_CANARIES_PER_CLASS
from .rules import _RULES_BY_KEY, ON_INCONCLUSIVE, OPTION_KEYS, RULES, STRONGEST, Rule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{where} must be a number, got NaN")
    return value


def _in_range(value: Any, limits: tuple[float, float], where: str) -> float:
    value = _number(value, where)
    lo, hi = limits
    if not lo <= value <= hi:
        span = f">= {lo:g}" if math.isinf(hi) else f"between {lo:g} and {hi:g}"
        raise ValueError(f"{where} must be {span}, got {value:g}")
    return value


def _limit(rule: Rule, value: Any, where: str) -> float:
    """A limit in ``[lo, hi)`` of ``rule.limits``; a limit at ``hi`` (the figure's largest value) is refused."""
    lo, hi = rule.limits
    value = _number(value, where)
    if value >= hi:
        largest = "infinite" if math.isinf(hi) else f"at most {hi:g}"
        raise ValueError(
            f"{where} = {value:g} can never be exceeded (the {rule.label.format(fpr='an')} is {largest}), so it would "
            f"release every model, leaking or not; use a limit below {hi:g}, or remove {rule.key} to leave it unjudged"
        )
    return _in_range(value, (lo, math.inf), where)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a positive integer (a number of canaries), got {value!r}")
    return value


def _parse_fpr_table(rule: Rule, table: Any) -> dict[float, float]:
    if not isinstance(table, Mapping) or not table:
        raise ValueError(
            f"{rule.key} must be a non-empty table of FPR -> maximum TPR, e.g. {rule.key} = {{ \"0.01\" = 0.05 }}; "
            f"got {table!r}"
        )
    parsed: dict[float, float] = {}
    for raw_fpr, raw_limit in table.items():
        try:
            fpr = float(raw_fpr)
        except (TypeError, ValueError):
            raise ValueError(f"{rule.key}: FPR level {raw_fpr!r} is not a number; write it as a string like \"0.01\"") from None
        if not 0.0 < fpr < 1.0:
            raise ValueError(f"{rule.key}: FPR level {raw_fpr!r} must be between 0 and 1 (exclusive)")
        limit = _limit(rule, raw_limit, f"{rule.key}[{raw_fpr!r}]")
        if limit < fpr:
            raise ValueError(
                f"{rule.key}[{raw_fpr!r}] = {limit:g} is below {fpr:g}, the TPR that random guessing reaches at "
                f"{pct(fpr)} FPR: every model would be blocked; use a limit >= {fpr:g}"
            )
        parsed[fpr] = limit
    return dict(sorted(parsed.items()))


class ReleasePolicy:
    """Limits that the final audit must meet before a model is released.

    Args:
        attack: ``"strongest"`` (judge every attack, the worst decides) or an attack name.
        confidence: the confidence level the decision must hold at; the audit's
            intervals must have been computed at this level or higher.
        on_inconclusive: ``"block"`` (default, fail closed) or ``"pass"``. It never releases
            a figure that was not measured (see :mod:`mia_guard.gate.evidence`).
        min_canaries_per_class: fewest members and fewest non-members with valid
            statistics the final audit must have; fewer make the verdict inconclusive at
            best, and it never releases.
        max_invalid_share: largest share of canaries left out for invalid statistics;
            more make the verdict inconclusive at best, and it never releases.
        **limits: keys of :data:`RULES`, e.g. ``max_auc=0.6``,
            ``max_tpr_at_fpr={0.01: 0.05}``, ``max_epsilon_lower_bound=1.0``.

    Raises:
        ValueError: unknown key (with the closest valid one), bad type or range, or no limits.
    """

    def __init__(
        self,
        *,
        attack: str = STRONGEST,
        confidence: float = 0.95,
        on_inconclusive: str = "block",
        min_canaries_per_class: int = DEFAULT_MIN_CANARIES_PER_CLASS,
        max_invalid_share: float = DEFAULT_MAX_INVALID_SHARE,
        **limits: Any,
    ) -> None:
        if not isinstance(attack, str) or not attack:
            raise ValueError(f"attack must be \"{STRONGEST}\" or an attack name, got {attack!r}")
        if on_inconclusive not in ON_INCONCLUSIVE:
            raise ValueError(f"on_inconclusive must be \"block\" or \"pass\", got {on_inconclusive!r}")
        self.attack = attack
        self.confidence = _number(confidence, "confidence")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), e.g. 0.95; got {self.confidence:g}")
        self.on_inconclusive = on_inconclusive
        self.min_canaries_per_class = _count(min_canaries_per_class, "min_canaries_per_class")
        self.max_invalid_share = _number(max_invalid_share, "max_invalid_share")
        if not 0.0 <= self.max_invalid_share < 1.0:
            raise ValueError(f"max_invalid_share must be in [0, 1), e.g. 0.05; got {self.max_invalid_share:g}")
        self.limits: dict[str, Any] = {}
        for key, value in limits.items():
            rule = _RULES_BY_KEY.get(key)
            if rule is None:
                raise ValueError(f"unknown policy key {key!r}{_suggest(key, list(OPTION_KEYS) + list(_RULES_BY_KEY))}")
            if value is None:
                continue
            self.limits[key] = _parse_fpr_table(rule, value) if rule.per_fpr else _limit(rule, value, key)
        if not self.limits:
            raise ValueError(f"the policy sets no limit; set at least one of {', '.join(_RULES_BY_KEY)}")

    # -------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "policy") -> "ReleasePolicy":
        """A policy from a dict with the TOML file's keys (FPR table keys may be strings)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} must be a table of policy keys, got {type(data).__name__}")
        try:
            return cls(**dict(data))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "ReleasePolicy":
        """Read a policy file (see ``docs/gate.md`` and :func:`example_policy_path`).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not valid TOML, or an invalid policy (the message names the key).
        """
        path = Path(path)
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(f"policy file {path} does not exist; start from {example_policy_path()}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"policy file {path} is not valid TOML: {err}") from None
        except OSError as err:
            raise ValueError(f"policy file {path} cannot be read ({err.strerror or err}); give the path of a TOML file") from None
        except RecursionError:
            raise ValueError(f"policy file {path} is nested too deeply to be a release policy") from None
        return cls.from_dict(data, source=f"policy {path}")

    @classmethod
    def example(cls) -> "ReleasePolicy":
        """The commented example policy shipped with mia_guard."""
        return cls.from_toml(example_policy_path())

    def to_dict(self) -> dict:
        """The policy as a TOML/JSON-able dict (FPR table keys as strings)."""
        out: dict[str, Any] = {
            "attack": self.attack,
            "confidence": self.confidence,
            "on_inconclusive": self.on_inconclusive,
            "min_canaries_per_class": self.min_canaries_per_class,
            "max_invalid_share": self.max_invalid_share,
        }
        for key, value in self.limits.items():
            out[key] = {repr(f): v for f, v in value.items()} if isinstance(value, dict) else value
        return out

    def __getattr__(self, name: str) -> Any:
        """Limits read as attributes (``policy.max_auc``); ``None`` when the policy does not set one."""
        if name in _RULES_BY_KEY:
            return self.__dict__.get("limits", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReleasePolicy) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"ReleasePolicy({args})"

    # -------------------------------------------------------- compatibility with an audit
    @property
    def fprs(self) -> list[float]:
        """FPR levels the policy limits TPR at."""
        return sorted({f for rule in RULES if rule.per_fpr for f in self.limits.get(rule.key, {})})

    def check_compatible(self, *, fprs: Any, confidence: float) -> None:
        """Raise ``ValueError`` unless audits at ``fprs`` and ``confidence`` can be judged.

        Call it before training (e.g. with ``Auditor.fprs`` and ``Auditor.confidence``) to
        learn early that the policy asks for an FPR the audit does not measure, or for a
        higher confidence than its intervals have. ``fprs=None`` skips the FPR check.
        """
        if confidence + 1e-12 < self.confidence:
            raise ValueError(
                f"the policy requires {self.confidence:.3g} confidence but the audit's intervals are "
                f"{confidence:.3g} intervals; audit with Auditor(confidence={self.confidence:g}) or lower the "
                "policy's confidence"
            )
        if fprs is None:
            return
        measured = [float(f) for f in fprs]
        missing = [f for f in self.fprs if not any(math.isclose(f, m, rel_tol=1e-9) for m in measured)]
        if missing:
            raise ValueError(
                f"the policy limits TPR at FPR {', '.join(pct(f) for f in missing)} but the audit measured TPR only at "
                f"{', '.join(pct(f) for f in sorted(measured)) or 'no FPR'}; add the level to Auditor(fprs=...) or "
                "remove it from max_tpr_at_fpr"
            )


def example_policy_path() -> Path:
    """Path of the commented example policy shipped in ``mia_guard/data/release_policy.toml``."""
    return Path(__file__).parent.parent / "data" / "release_policy.toml"
