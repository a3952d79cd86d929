"""The ``"privacy"`` analysis: ε lower bounds and canary exposure at every audit.

Enable it on an :class:`~mia_guard.audit.auditor.Auditor`::

    auditor = Auditor(canaries, tok, analyses=["privacy"],
                      analysis_options={"delta": 1e-5, "epsilon_target": 2.0})
    result = auditor.audit(model, step)
    result.extras["privacy"]["epsilon_lb_one_run"]

Options (``Auditor(analysis_options=...)``, all optional):

* ``privacy_attack``: ``"strongest"`` (default) or the name of an attack of the audit.
* ``k_plus`` / ``k_minus``: guesses "member" / "non-member" of the one-run audit, as a
  count (``int``) or a fraction of the evaluated canaries (``float`` in ``[0, 1]``);
  giving one fixes both (the other is 0). Default: chosen on a calibration fold.
* ``delta``: δ of both bounds (default ``1e-5``). Compare with a DP guarantee at the
  same δ.
* ``epsilon_target``: the ε the audit should be able to show (e.g. a policy's
  ``max_epsilon_lower_bound``); a warning says when the canaries cannot show it.

Figures (``AuditResult.extras["privacy"]``, a JSON-able dict; floats, names as the
TensorBoard tags and policy keys read them):

* ``epsilon_lb_one_run`` — Steinke, Nasr & Jagielski (2023) one-run bound; details in
  ``one_run`` (``m, r, v, k_plus, k_minus, k_source, attack, guarantee, ceiling, ...``).
* ``epsilon_lb_two_point`` — threshold-test bound over canaries; details in ``two_point``.
* ``exposure_max`` / ``exposure_mean`` (bits, with ``_low`` / ``_high`` simultaneous
  intervals) and ``exposure_cap_bits`` — templated canaries only; details in ``exposure``.
* ``warnings`` — figures the canaries cannot resolve and bounds whose guarantee is
  weaker than the theorem's.

How nothing is fitted and measured on the same canaries:

* one-run: a label-free seeded permutation splits the canaries into a calibration and an
  evaluation half. The attack (for ``"strongest"``) and the guess counts are chosen on
  the calibration half by the bound they reach there; the bound is computed on the
  evaluation half alone. With both the attack and ``k_plus``/``k_minus`` given, nothing
  is chosen and every canary is evaluated. Sound (the theorem's guarantee) when the
  canaries were included by independent fair coins (``split="coin"``) and the attack's
  scores do not read membership labels (unsupervised attacks); cross-fitted attacks
  use other canaries' labels, so their bound is marked ``"heuristic"``.
* two-point: every candidate attack is evaluated by
  :func:`~mia_guard.stats.epsilon_two_point.two_point_epsilon_lower_bound` (threshold on a calibration
  half, rates on the other) at confidence ``1 - (1 - c) / K`` for ``K`` candidates, and
  the largest bound is reported: by the union bound all ``K`` hold jointly at ``c``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..attacks import registry as attack_registry
from ..stats.epsilon_one_run import (
    canaries_needed_for_epsilon,
    choose_guess_counts,
    one_run_epsilon_from_scores,
    one_run_epsilon_lower_bound,
)
from ..stats.epsilon_two_point import two_point_epsilon_lower_bound
from ..stats.estimate import clopper_pearson
from ..stats.exposure import exposure
from .registry import AnalysisInput, register_analysis

__all__ = ["DEFAULT_DELTA", "STRONGEST", "privacy_analysis", "privacy_figures"]

DEFAULT_DELTA = 1e-5
STRONGEST = "strongest"


@register_analysis("privacy")
def privacy_analysis(data: AnalysisInput) -> dict:
    """The privacy figures of one audit (see the module docstring)."""
    canaries = data.canaries
    template = canaries.template if canaries.kind == "templated" else None
    return privacy_figures(
        data.scores,
        data.is_member,
        data.valid,
        confidence=data.confidence,
        seed=data.seed,
        coin_split=canaries.split == "coin",
        secret_nll=_secret_nll(data) if template is not None else None,
        secret_space_size=canaries.secret_space_size if template is not None else None,  # token-aligned: token space
        options=data.options,
    )


def privacy_figures(
    scores: Mapping[str, np.ndarray],
    is_member: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    coin_split: bool = True,
    secret_nll: np.ndarray | None = None,
    secret_space_size: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict:
    """Privacy figures from attack scores (and secret NLLs for exposure).

    Args:
        scores: attack name -> float ``[N]`` (higher = member; NaN where not ``valid``).
        is_member: bool ``[N]``.
        valid: bool ``[N]``, canaries with finite statistics (default: all).
        confidence: level of every bound and interval.
        seed: seed of the label-free splits.
        coin_split: whether membership came from independent fair coins.
        secret_nll: float ``[N]``, each canary's total secret NLL (templated canaries).
        secret_space_size: ``|S|`` of the canaries' template.
        options: see the module docstring.

    Returns:
        the JSON-able dict described in the module docstring.
    """
    opts = _parse_options(options or {})
    is_member = np.asarray(is_member, dtype=bool)
    valid = np.ones(is_member.size, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    unknown = [a for a in _named(opts) if a not in scores]
    attacks = list(scores)
    warnings: list[str] = []
    out: dict[str, Any] = {"confidence": float(confidence), "delta": opts["delta"]}
    if unknown:
        warnings.append(
            f"privacy_attack {unknown[0]!r} did not run at this audit (ran: {', '.join(attacks) or 'none'}); "
            "no epsilon bounds"
        )
    elif not attacks:
        warnings.append("no attack produced scores at this audit; no epsilon bounds")
    else:
        candidates = _named(opts) or attacks
        one_run = _one_run(scores, candidates, is_member, valid, opts, confidence, seed, coin_split, warnings)
        if one_run is not None:
            out["epsilon_lb_one_run"] = one_run["epsilon_lb"]
            out["one_run"] = one_run
        two_point = _two_point(scores, candidates, is_member, valid, opts["delta"], confidence, seed, warnings)
        if two_point is not None:
            out["epsilon_lb_two_point"] = two_point["epsilon_lb"]
            out["two_point"] = two_point
    if secret_nll is not None and secret_space_size is not None:
        out.update(_exposure(np.asarray(secret_nll, dtype=np.float64), is_member, valid, secret_space_size,
                             confidence, warnings))
    out["warnings"] = warnings
    return out


# ------------------------------------------------------------------ options


def _parse_options(options: Mapping[str, Any]) -> dict:
    attack = options.get("privacy_attack", STRONGEST)
    if not isinstance(attack, str) or not attack:
        raise ValueError(f"privacy_attack must be an attack name or {STRONGEST!r}, got {attack!r}")
    if attack != STRONGEST:
        attack_registry.get(attack)  # raises KeyError listing the available attacks
    delta = options.get("delta", DEFAULT_DELTA)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be a number in [0, 1), got {delta!r}")
    target = options.get("epsilon_target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0):
        raise ValueError(f"epsilon_target must be a number > 0, got {target!r}")
    guesses = None
    if options.get("k_plus") is not None or options.get("k_minus") is not None:
        guesses = tuple(_guess_spec(k, 0 if options.get(k) is None else options[k]) for k in ("k_plus", "k_minus"))
    return {
        "attack": attack,
        "delta": float(delta),
        "epsilon_target": None if target is None else float(target),
        "guesses": guesses,
    }


def _guess_spec(name: str, value: Any) -> tuple[str, float]:
    """``("count", n)`` for an int, ``("fraction", f)`` for a float in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a count (int) or a fraction (float in [0, 1]), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return "count", float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} = {value} is a float, read as a fraction of the canaries, so it must be in [0, 1]; "
            "write a count as an int"
        )
    return "fraction", float(value)


def _named(opts: dict) -> list[str]:
    return [] if opts["attack"] == STRONGEST else [opts["attack"]]


def _is_supervised(name: str) -> bool:
    try:
        return attack_registry.get(name).supervised
    except KeyError:  # an attack registered under a name the registry no longer has: assume the worst
        return True


def _counts(guesses: tuple, n: int) -> tuple[int, int]:
    """Guess counts for ``n`` canaries from the parsed ``k_plus``/``k_minus`` options."""
    (kind_p, plus), (kind_m, minus) = guesses
    k_plus = int(round(plus * n)) if kind_p == "fraction" else int(plus)
    k_minus = int(round(minus * n)) if kind_m == "fraction" else int(minus)
    if kind_p == "fraction" and kind_m == "fraction":
        k_minus = min(k_minus, n - k_plus)
    if k_plus + k_minus > n:
        raise ValueError(
            f"k_plus + k_minus = {k_plus + k_minus} guesses exceed the {n} canaries evaluated; "
            "give fewer guesses or fractions"
        )
    return k_plus, k_minus


# ------------------------------------------------------------------ one-run bound


def _label_free_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng([seed, 0x5E1]).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def _one_run(
    scores: Mapping[str, np.ndarray],
    candidates: Sequence[str],
    is_member: np.ndarray,
    valid: np.ndarray,
    opts: dict,
    confidence: float,
    seed: int,
    coin_split: bool,
    warnings: list[str],
) -> dict | None:
    delta, guesses = opts["delta"], opts["guesses"]
    labels = is_member[valid]
    m_all = int(labels.size)
    if opts["attack"] == STRONGEST:
        unsupervised = [a for a in candidates if not _is_supervised(a)]
        candidates = unsupervised or list(candidates)
    fixed = guesses is not None and opts["attack"] != STRONGEST
    if fixed:  # nothing is chosen: every valid canary is evaluated
        attack = candidates[0]
        k_plus, k_minus = _counts(guesses, m_all)
        result = one_run_epsilon_from_scores(scores[attack][valid], labels, k_plus, k_minus, delta, confidence, seed)
        result.update(attack=attack, k_source="options", n_calibration=0, calibration_epsilon=None)
    else:
        if m_all < 4:
            warnings.append(f"one-run bound needs at least 4 canaries with finite statistics, got {m_all}")
            return None
        cal, ev = _label_free_halves(m_all, seed)
        best = None
        for attack in candidates:
            s = scores[attack][valid]
            if guesses is None:
                k_cal = choose_guess_counts(s[cal], labels[cal], delta=delta, confidence=confidence, seed=seed)
            else:
                k_cal = _counts(guesses, cal.size)
            eps_cal = one_run_epsilon_from_scores(s[cal], labels[cal], *k_cal, delta, confidence, seed)["epsilon_lb"]
            if best is None or eps_cal > best[1]:
                best = (attack, eps_cal)
        attack, eps_cal = best
        s = scores[attack][valid]
        if guesses is None:
            k_plus, k_minus = choose_guess_counts(
                s[cal], labels[cal], delta=delta, confidence=confidence, n_eval=ev.size, seed=seed
            )
        else:
            k_plus, k_minus = _counts(guesses, ev.size)
        result = one_run_epsilon_from_scores(s[ev], labels[ev], k_plus, k_minus, delta, confidence, seed)
        result.update(
            attack=attack,
            k_source="calibration_fold" if guesses is None else "options",
            n_calibration=int(cal.size),
            calibration_epsilon=float(eps_cal),
        )
    m, r = result["m"], result["r"]
    result["candidates"] = list(candidates)
    result["ceiling"] = one_run_epsilon_lower_bound(m, m, m, delta, confidence)
    result["ceiling_at_r"] = one_run_epsilon_lower_bound(m, r, r, delta, confidence) if r else 0.0
    reasons = []
    if not coin_split:
        reasons.append("membership was not drawn by independent fair coins (use CanarySet split='coin')")
    if _is_supervised(result["attack"]):
        reasons.append(f"attack {result['attack']!r} is cross-fitted on other canaries' membership labels")
    result["guarantee"] = "heuristic" if reasons else "theorem"
    if reasons:
        warnings.append("one-run epsilon bound is a heuristic, not the theorem's guarantee: " + "; ".join(reasons))
    _ceiling_warning("one-run", result["ceiling"], m, opts, confidence, warnings, split=not fixed)
    return result


def _ceiling_warning(
    which: str, ceiling: float, m: int, opts: dict, confidence: float, warnings: list[str], split: bool
) -> None:
    target = opts["epsilon_target"]
    if target is None or ceiling >= target:
        return
    try:
        need = canaries_needed_for_epsilon(target, confidence, opts["delta"])["canaries"]
        total = 2 * need if split else need
        how = f"showing eps >= {target:g} needs >= {total} canaries even with every guess right"
    except ValueError as err:
        how = str(err)
    warnings.append(
        f"{which} epsilon bound: {m} evaluated canaries cannot show eps above {ceiling:.3g} at "
        f"{confidence:.0%} confidence (delta={opts['delta']:g}), below the target {target:g}; {how}"
    )


# ------------------------------------------------------------------ two-point bound


def _two_point_ceiling(n_pos: int, n_neg: int, delta: float, tail: float) -> float:
    """Two-point bound when every evaluation member and no non-member is flagged."""
    tpr_lo = tail ** (1.0 / n_pos)
    fpr_hi = 1.0 - tail ** (1.0 / n_neg)
    flag_in = math.log((tpr_lo - delta) / fpr_hi) if tpr_lo > delta else 0.0
    flag_out = math.log((1.0 - fpr_hi - delta) / (1.0 - tpr_lo)) if 1.0 - fpr_hi > delta else 0.0
    return max(flag_in, flag_out, 0.0)


def _two_point(
    scores: Mapping[str, np.ndarray],
    candidates: Sequence[str],
    is_member: np.ndarray,
    valid: np.ndarray,
    delta: float,
    confidence: float,
    seed: int,
    warnings: list[str],
) -> dict | None:
    labels = is_member[valid]
    per_attack_confidence = 1.0 - (1.0 - confidence) / len(candidates)
    best = None
    for attack in candidates:
        try:
            result = two_point_epsilon_lower_bound(scores[attack][valid], labels, delta, per_attack_confidence, seed)
        except ValueError as err:
            warnings.append(f"two-point epsilon bound not computed: {err}")
            return None
        if best is None or result["epsilon_lb"] > best["epsilon_lb"]:
            best = dict(result, attack=attack)
    best.update(
        confidence=float(confidence),
        confidence_per_attack=per_attack_confidence,
        candidates=list(candidates),
        guarantee="heuristic",
        ceiling=_two_point_ceiling(
            best["n_members_eval"], best["n_nonmembers_eval"], delta, (1.0 - per_attack_confidence) / 2.0
        ),
    )
    return best


# ------------------------------------------------------------------ exposure


def _secret_nll(data: AnalysisInput) -> np.ndarray:
    """Total NLL (nats) of each canary's secret: the sum of ``nll`` over its scored tokens."""
    stats_ = data.stats
    return (stats_.nll * stats_.mask).sum(dim=1).double().numpy()


def _exposure(
    secret_nll: np.ndarray,
    is_member: np.ndarray,
    valid: np.ndarray,
    secret_space_size: float,
    confidence: float,
    warnings: list[str],
) -> dict:
    members = secret_nll[valid & is_member]
    reference = np.sort(secret_nll[valid & ~is_member])
    if members.size < 1 or reference.size < 2:
        warnings.append(
            f"exposure needs at least 1 inserted and 2 non-inserted canaries with finite statistics, got "
            f"{members.size} and {reference.size}"
        )
        return {}
    result = exposure(members, reference, secret_space_size)
    low, high = _simultaneous_exposure_intervals(members, reference, result.cap, confidence)
    n_ref = reference.size
    resolution = math.log2(n_ref)
    if result.extrapolated.any():
        warnings.append(
            f"{int(result.extrapolated.sum())} inserted canaries beat all {n_ref} non-inserted ones: their exposure "
            f"above log2({n_ref}) = {resolution:.2f} bits is a skew-normal extrapolation, not a measurement "
            "(more non-inserted canaries extend the measured range)"
        )
    return {
        "exposure_max": result.max,
        "exposure_max_low": float(low.max()),
        "exposure_max_high": float(high.max()),
        "exposure_mean": result.mean,
        "exposure_mean_low": float(low.mean()),
        "exposure_mean_high": float(high.mean()),
        "exposure_cap_bits": float(result.cap),
        "exposure": {
            "method": result.method,
            "n_members": int(members.size),
            "n_reference": int(n_ref),
            "n_extrapolated": int(result.extrapolated.sum()),
            "measured_range_bits": resolution,
            "interval": "simultaneous Clopper-Pearson over the inserted canaries' rank fractions",
            "exposures": [float(x) for x in result.exposures],
        },
    }


def _simultaneous_exposure_intervals(
    members: np.ndarray, reference: np.ndarray, cap: float, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per inserted canary, exposure bounds holding jointly for all of them at ``confidence``.

    The count ``c`` of non-inserted canaries with NLL <= the canary's is Binomial(n, p) with
    ``p = rank / |S|``; a Clopper–Pearson interval for ``p`` at level ``1 - (1 - confidence) / M``
    (Bonferroni over the ``M`` inserted canaries) maps to ``[-log2 p_high, -log2 p_low]``,
    clipped to ``[0, cap]`` (``p_low = 0`` when ``c = 0``, so the upper end is then the cap).
    """
    n = reference.size
    level = 1.0 - (1.0 - confidence) / members.size
    counts = np.searchsorted(reference, members, side="right")
    low, high = np.empty(members.size), np.empty(members.size)
    for i, c in enumerate(counts):
        p_low, p_high = clopper_pearson(int(c), n, level)
        low[i] = -math.log2(p_high)
        high[i] = cap if p_low == 0.0 else -math.log2(p_low)
    return np.clip(low, 0.0, cap), np.clip(high, 0.0, cap)
