"""AuditConfig: every option of an audit in one frozen object, validated in one place.

``Auditor``, ``MIAAuditCallback``, ``AuditLoop`` and ``prefix_sensitivity`` all take an
``AuditConfig`` (``config=``), or its fields as keyword arguments, which are forwarded
here by :meth:`AuditConfig.from_options`::

    config = AuditConfig(attacks=("loss", "min_k"), fprs=(0.01, 0.1), analyses=("privacy",))
    Auditor(canaries, tok, config=config)
    Auditor(canaries, tok, attacks=["loss", "min_k"])           # the short form
    MIAAuditCallback(canaries, config=config, every_n_steps=200, seed=3)  # keywords override

What belongs here and what does not: the config holds what decides the *figures* of an
audit (attacks and their parameters, FPR levels, confidence, cross-fitting folds, seed,
analyses, the reference mode, the scored prefix) and the two scoring batch sizes, i.e.
everything that must be the same when a run is resumed on another machine. It is plain
JSON (:meth:`to_dict` / :meth:`from_dict`), so a Trainer checkpoint carries it whole.
Per-process runtime choices stay outside: ``device`` (each rank has its own) and
``progress`` (a bar on the main process only) are arguments of the Auditor and the
integrations, and the tokenizer is an object, not an option.

Attack parameters and analysis options must be JSON values (numbers, strings, booleans,
``None``, lists and dicts with string keys). They are stored read-only; attacks and
analyses receive fresh mutable copies (:meth:`params_for`, :meth:`analysis_inputs`).
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ..analyses import registry as analysis_registry  # the registries import none of their plug-ins
from ..attacks import registry as attack_registry

#: Chosen from benchmarks/real_model.py (docs/real_model.md): the strongest attacks when fine-tuning a
#: pretrained LM (classifier_logreg, trajectory_logreg), the seed method on reference-calibrated statistics
#: (seq_lira_refcal), the reference attacks it is measured against, and the loss / Min-K%++ baselines.
DEFAULT_ATTACKS = ("loss", "min_k_plus_plus", "reference", "lira_online_ref", "seq_lira_refcal", "classifier_logreg",
                   "trajectory_logreg")
DEFAULT_FPRS = (0.001, 0.01, 0.1)
#: ``"first_audit"``: the first audited model (step 0) is the reference of calibrated attacks; ``"none"``: no reference.
REFERENCE_MODES = ("first_audit", "none")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class AuditConfig:
    """The options of an audit (see the module docstring for what is and is not one).

    Attributes:
        attacks: names of registered attacks (``mia_guard.attacks.available()``), each once.
        attack_params: extra keyword arguments per attack, e.g. ``{"min_k": {"k": 0.1}}``;
            only for attacks in ``attacks``.
        fprs: false-positive rates at which TPR is reported, each in (0, 1); stored sorted.
        confidence: confidence level of every interval, in [0.5, 1).
        n_folds: cross-fitting folds for attacks that learn from labels (>= 2).
        seed: seed for folds, bootstrap intervals and any attack randomness (>= 0).
        analyses: names of registered analyses run after the attacks
            (``mia_guard.analyses.available()``); results in ``AuditResult.extras[name]``.
        analysis_options: options every analysis reads (see each analysis, e.g.
            ``{"delta": 1e-5}`` for ``"privacy"``, ``{"profile": {...}}``).
        reference: one of :data:`REFERENCE_MODES`; ``"first_audit"`` uses the first
            audited model (step 0, before training) as the reference of calibrated attacks.
        prefix_tokens: leave this many leading tokens of text/token canaries unscored.
        batch_size: canaries per forward pass (``None``: chosen from their length).
        chunk_size: scored positions per output-head chunk of the scoring (``None``: the default).
    """

    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    attack_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fprs: tuple[float, ...] = DEFAULT_FPRS
    confidence: float = 0.95
    n_folds: int = 5
    seed: int = 0
    analyses: tuple[str, ...] = ()
    analysis_options: Mapping[str, Any] = field(default_factory=dict)
    reference: str = "first_audit"
    prefix_tokens: int = 0
    batch_size: int | None = None
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise once; the instance is frozen afterwards
        set_(self, "attacks", _names("attacks", self.attacks, attack_registry.ATTACKS))
        set_(self, "analyses", _names("analyses", self.analyses, analysis_registry.ANALYSES, allow_empty=True))
        params = _mapping("attack_params", self.attack_params)
        for name, value in params.items():
            if not isinstance(value, Mapping):
                raise TypeError(f"attack_params[{name!r}] must be a dict of keyword arguments, got "
                                f"{type(value).__name__}")
        unknown = sorted(set(params) - set(self.attacks))
        if unknown:
            raise ValueError(f"attack_params given for attacks not in the list: {unknown}; attacks are "
                             f"{list(self.attacks)}")
        set_(self, "attack_params", _freeze(params, "attack_params"))
        set_(self, "analysis_options", _freeze(_mapping("analysis_options", self.analysis_options),
                                               "analysis_options"))
        set_(self, "fprs", _fprs(self.fprs))
        if not _is_real(self.confidence) or not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be a number in [0.5, 1), got {self.confidence!r}")
        set_(self, "confidence", float(self.confidence))
        set_(self, "n_folds", _integer("n_folds", self.n_folds, minimum=2, why=" (cross-fitting needs two folds)"))
        set_(self, "seed", _integer("seed", self.seed, minimum=0))
        set_(self, "prefix_tokens", _integer("prefix_tokens", self.prefix_tokens, minimum=0))
        for name in ("batch_size", "chunk_size"):
            if getattr(self, name) is not None:
                set_(self, name, _integer(name, getattr(self, name), minimum=1, why=" or None (chosen automatically)"))
        if self.reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {self.reference!r}")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_options(cls, config: AuditConfig | Mapping[str, Any] | None = None, /, **options: Any) -> AuditConfig:
        """``config`` (an AuditConfig, its :meth:`to_dict`, or ``None`` for the defaults)
        with the keyword ``options`` replacing its fields.

        Raises:
            TypeError: an option that is not a field (the message suggests the closest).
        """
        if config is None:
            base = cls()
        elif isinstance(config, AuditConfig):
            base = config
        elif isinstance(config, Mapping):
            base = cls.from_dict(config)
        else:
            raise TypeError(f"config must be an AuditConfig or its dict, got {type(config).__name__}")
        return base.replace(**options) if options else base

    def replace(self, **options: Any) -> AuditConfig:
        """A copy with the given fields replaced (unknown names are refused with a suggestion)."""
        _refuse_unknown(options, "AuditConfig")
        return replace(self, **options)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON (lists and dicts); :meth:`from_dict` reverses it exactly."""
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditConfig:
        """The config of :meth:`to_dict` (missing fields take their defaults; unknown ones are refused)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"an AuditConfig dict must be a mapping, got {type(data).__name__}")
        _refuse_unknown(data, "AuditConfig.from_dict")
        return cls(**dict(data))

    # ------------------------------------------------------------------ reading
    def params_for(self, attack: str) -> dict[str, Any]:
        """A fresh, mutable copy of the keyword arguments for ``attack`` (empty when none)."""
        return _thaw(self.attack_params.get(attack, _EMPTY))

    def analysis_inputs(self) -> dict[str, Any]:
        """A fresh, mutable copy of :attr:`analysis_options`."""
        return _thaw(self.analysis_options)

    # frozen: a copy is the object itself (its mappings are read-only views, which cannot be deep-copied)
    def __copy__(self) -> AuditConfig:
        return self

    def __deepcopy__(self, memo: dict) -> AuditConfig:
        return self

    def __reduce__(self) -> tuple[Callable, tuple]:
        return (AuditConfig.from_dict, (self.to_dict(),))


def config_from_call(owner: Callable, config: Any, options: Mapping[str, Any]) -> AuditConfig:
    """The one place the integrations forward their ``config=None, **options`` to.

    ``owner`` (the function or class whose ``**options`` these are) only improves the
    error for a misspelt keyword: its own parameter names are suggested too.
    """
    params = inspect.signature(owner).parameters
    own = [name for name, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    _refuse_unknown(options, getattr(owner, "__qualname__", str(owner)), also=own)
    return AuditConfig.from_options(config, **options)


# ---------------------------------------------------------------------- validation helpers
FIELD_NAMES = tuple(f.name for f in fields(AuditConfig))


def _refuse_unknown(options: Mapping[str, Any], owner: str, also: tuple[str, ...] | list[str] = ()) -> None:
    unknown = [name for name in options if name not in FIELD_NAMES]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(str(name), [*FIELD_NAMES, *also], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise TypeError(
        f"{owner} got an unknown option {name!r}{hint}; the audit options are: {', '.join(FIELD_NAMES)}"
    )


def _names(option: str, value: Any, registry: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"{option} must be a list of names, e.g. [{value!r}], got the string {value!r}")
    names = tuple(value)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"{option} must be names (strings), got {list(names)!r}")
    if not names and not allow_empty:
        raise ValueError(f"{option} is empty; name at least one (available: {', '.join(registry.names())})")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{option} {duplicates} are listed more than once; list each {registry.kind} once")
    for name in names:
        registry.check(name)  # raises, listing the available names
    return names


def _mapping(option: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{option} must be a dict, got {type(value).__name__}")
    return dict(value)


def _fprs(value: Any) -> tuple[float, ...]:
    if _is_real(value):
        raise TypeError(f"fprs must be a list of rates, e.g. [{value!r}], got the number {value!r}")
    values = list(value)
    if not values:
        raise ValueError("fprs is empty; give at least one false-positive rate, e.g. [0.01]")
    bad = [f for f in values if not _is_real(f) or not 0 < f < 1]
    if bad:
        raise ValueError(f"FPR levels must be in (0, 1), got {bad}")
    return tuple(sorted({float(f) for f in values}))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _integer(option: str, value: Any, *, minimum: int, why: str = "") -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}{why}, got {value!r}")
    return int(value)


def _freeze(value: Any, where: str) -> Any:
    """A read-only copy of a JSON value (dicts -> read-only mappings, lists -> tuples); refuses anything else."""
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where} keys must be strings (JSON), got {bad[0]!r}")
        return MappingProxyType({k: _freeze(v, f"{where}[{k!r}]") for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, f"{where}[{i}]") for i, v in enumerate(value))
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite (it is stored as JSON), got {value!r}")
        return float(value)
    raise TypeError(
        f"{where} must be a JSON value (number, string, boolean, None, list or dict), got {type(value).__name__}; "
        "the config is saved in checkpoints and reports"
    )


def _thaw(value: Any) -> Any:
    """Plain, mutable JSON of a (frozen) value."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
