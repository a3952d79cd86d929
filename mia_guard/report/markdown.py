"""``report.md``: a reviewer-readable summary rendered from the report dict alone.

Everything shown comes from ``report.json`` (see :mod:`mia_guard.report.schema`), so
re-rendering an archived report gives the same text.
"""

from __future__ import annotations

import json
from typing import Any

from .schema import curve_fpr, final_audit, fmt_estimate, pct

LEAKAGE_PNG = "leakage.png"
ROC_PNG = "roc.png"
PROFILE_PNG = "profile.png"
#: ``run_info`` key under which a :func:`mia_guard.audit.prefix.prefix_sensitivity` result is shown as its own section.
PREFIX_KEY = "prefix_sensitivity"


def render_markdown(report: dict) -> str:
    """The Markdown summary of a validated report dict."""
    sections = [
        _header(report),
        _verdict(report.get("gate")),
        _audited(report),
        _final_table(report),
        _privacy(final_audit(report)),
        _profile(final_audit(report)),
        _prefix(report),
        _extras(final_audit(report)),
        _over_steps(report),
        _roc(report),
        _how_to_read(report),
        _caveats(report),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _header(report: dict) -> str:
    level = f"{report['confidence']:.0%}"
    return (
        "# Membership-inference audit report\n\n"
        f"Written {report.get('created', '?')} by mia_guard {report.get('mia_guard_version', '?')}. "
        f"Every number in [brackets] is a {level} confidence interval; the release gate decides on "
        "these intervals, not on the point estimates."
    )


def _verdict(gate: dict | None) -> str:
    if not gate:
        return (
            "## Release verdict\n\nNo release policy was applied. Run "
            "`mia-guard gate report.json --policy POLICY.toml` to decide."
        )
    action = "release" if gate.get("released") else "do not release"
    lines = [
        "## Release verdict",
        "",
        f"**{gate['verdict'].upper()}: {action}** (exit code {gate['exit_code']}; audit at step {gate['step']}).",
        "",
        "Policy: " + ", ".join(f"`{k} = {json.dumps(v, sort_keys=True)}`" for k, v in gate.get("policy", {}).items()),
        "",
    ]
    lines += [f"- {reason}" for reason in gate.get("reasons", [])]
    return "\n".join(lines)


def _audited(report: dict) -> str:
    c = report["canaries"]
    audits = report["audits"]
    canary = f"{c['count']} canaries: {c['members']} members inserted into training, {c['non_members']} held out"
    if c.get("template"):
        canary += f"; template `{c['template']}`"
    if c.get("secret_space_bits") is not None:
        canary += f" (secret space {c['secret_space_bits']:.1f} bits)"
    final = final_audit(report)
    lines = [
        "## What was audited",
        "",
        f"- {canary}; canary set hash `{str(c['hash'])[:16]}…`.",
        f"- {len(audits)} audit{'s' if len(audits) != 1 else ''} at steps "
        f"{', '.join(str(a['step']) for a in audits[:12])}{' …' if len(audits) > 12 else ''}.",
        f"- Attacks at the final audit: {', '.join(f'`{a}`' for a in final['metrics']) or 'none'}.",
        f"- TPR measured at FPR {', '.join(pct(f) for f in report['fprs'])}; intervals at "
        f"{report['confidence']:.0%} confidence.",
    ]
    if final.get("skipped"):
        lines.append("- Skipped at the final audit: " + "; ".join(f"`{a}` ({why})" for a, why in final["skipped"].items()))
    if final.get("failed_attacks"):
        lines.append("- **Failed** at the final audit (the gate fails closed on them): "
                     + "; ".join(f"`{a}` ({why})" for a, why in final["failed_attacks"].items()))
    for failure in report.get("failed_audits") or []:
        lines.append(f"- **The audit at step {failure['step']} failed** and was skipped: {failure['reason']}.")
    run_info = dict(report.get("run_info") or {})
    if isinstance(run_info.get(PREFIX_KEY), dict):
        del run_info[PREFIX_KEY]  # shown as its own section
    if run_info:
        lines += ["", "Run information:", "", _table(["key", "value"], [[k, _plain(v)] for k, v in run_info.items()])]
    return "\n".join(lines)


def _final_table(report: dict) -> str:
    final = final_audit(report)
    strongest = report.get("final", {}).get("strongest_attack")
    fprs = [float(f) for f in report["fprs"]]
    header = ["attack", "AUC"] + [f"TPR at {pct(f)} FPR" for f in fprs] + ["advantage"]
    rows = []
    for name, m in final["metrics"].items():
        label = f"**{name}** (strongest)" if name == strongest else name
        tprs = [fmt_estimate(m["tpr_at_fpr"].get(repr(f))) for f in fprs]
        rows.append([label, fmt_estimate(m["auc"])] + tprs + [fmt_estimate(m["advantage"])])
    lines = [
        f"## Final audit (step {final['step']})",
        "",
        f"Mean canary loss (NLL per scored token): members {fmt_estimate(final['member_nll'])}, "
        f"non-members {fmt_estimate(final['nonmember_nll'])}. A member loss clearly below the non-member "
        "loss means the model memorized the members.",
        "",
        _table(header, rows) if rows else "No attack produced metrics at this audit.",
        "",
        f"The strongest attack is the one with the {report.get('final', {}).get('strongest_by', 'highest AUC')}. "
        "`n/a` marks a figure these canaries cannot resolve (see Caveats).",
    ]
    return "\n".join(lines)


#: (figure, label) of the privacy section; the figures are explained in docs/privacy.md.
PRIVACY_ROWS = (
    ("epsilon_lb_one_run", "epsilon lower bound, one run (Steinke et al. 2023)"),
    ("epsilon_lb_two_point", "epsilon lower bound, two-point test (heuristic in one run)"),
    ("exposure_max", "largest exposure of an inserted secret (bits)"),
    ("exposure_mean", "mean exposure of the inserted secrets (bits)"),
    ("extraction_rate", "inserted secrets extracted by greedy decoding"),
    ("extraction_rate_nonmember", "non-inserted secrets extracted (control)"),
)


def _has_privacy(final: dict) -> bool:
    privacy = (final.get("extras") or {}).get("privacy")
    return isinstance(privacy, dict) and any(name in privacy for name, _ in PRIVACY_ROWS)


def _privacy(final: dict) -> str:
    if not _has_privacy(final):
        return ""
    privacy = final["extras"]["privacy"]
    rows = []
    for name, label in PRIVACY_ROWS:
        if name not in privacy:
            continue
        value = privacy[name]
        if not isinstance(value, dict):
            value = {"value": value, "low": privacy.get(f"{name}_low"), "high": privacy.get(f"{name}_high")}
        text = fmt_estimate(value)
        if name.startswith("epsilon_lb") and value.get("value") is not None:
            text = f"{value['value']:.3f}"
        rows.append([f"{label} (`{name}`)", text, _privacy_detail(name, privacy)])
    text = "\n\n".join([
        "## Privacy figures of the final audit",
        _table(["figure", "value", "how it was measured"], rows),
        "The epsilon figures are lower bounds at the report's confidence: the run is not (epsilon, delta)-DP for "
        f"any smaller epsilon (delta = {_plain(privacy.get('delta'))}). See docs/privacy.md.",
    ])
    warnings = privacy.get("warnings") or []
    return text + ("\n\n" + "\n".join(f"- {w}" for w in warnings) if warnings else "")


def _privacy_detail(name: str, privacy: dict) -> str:
    one, two, exp = (privacy.get(k) or {} for k in ("one_run", "two_point", "exposure"))
    if name == "epsilon_lb_one_run" and one:
        return (
            f"attack {one.get('attack')}: {one.get('v')} of {one.get('r')} guesses right on {one.get('m')} canaries; "
            f"at most {_plain(one.get('ceiling'))} with these canaries; {one.get('guarantee')}"
        )
    if name == "epsilon_lb_two_point" and two:
        return (
            f"attack {two.get('attack')}: TPR >= {_plain(two.get('tpr_lo'))}, FPR <= {_plain(two.get('fpr_hi'))}; "
            f"at most {_plain(two.get('ceiling'))} with these canaries"
        )
    if name.startswith("exposure") and exp:
        return (
            f"{exp.get('n_members')} inserted vs {exp.get('n_reference')} random secrets; "
            f"{exp.get('n_extrapolated')} extrapolated beyond {_plain(exp.get('measured_range_bits'))} bits; "
            f"cap {_plain(privacy.get('exposure_cap_bits'))}"
        )
    if name.startswith("extraction"):
        return f"greedy decoding, {_plain(privacy.get('extraction_hint_tokens'))} secret tokens given as a hint"
    return ""


def final_profile(final: dict) -> dict | None:
    """The final audit's per-position leakage profile (``extras["profile"]``), if it has one."""
    profile = (final.get("extras") or {}).get("profile")
    return profile if isinstance(profile, dict) and "positions" in profile else None


def _profile(final: dict) -> str:
    profile = final_profile(final)
    if profile is None:
        return ""
    from ..analyses.profile import profile_markdown

    return "\n\n".join([
        "## Leakage per position (final audit)",
        profile_markdown(profile),
        f"![Per-position AUC and the correlation between positions]({PROFILE_PNG})",
    ])


def _prefix(report: dict) -> str:
    result = (report.get("run_info") or {}).get(PREFIX_KEY)
    if not isinstance(result, dict):
        return ""
    from ..audit.prefix import prefix_markdown

    return "## Prefix sensitivity\n\n" + prefix_markdown(result)


def _extras(final: dict) -> str:
    extras = {
        k: v
        for k, v in (final.get("extras") or {}).items()
        if (k != "privacy" or not _has_privacy(final)) and (k != "profile" or final_profile(final) is None)
    }
    if not extras:
        return ""
    parts = ["## Further figures of the final audit"]
    for group, figures in extras.items():
        parts.append(f"### {group}")
        if isinstance(figures, dict):
            parts.append(_table(["figure", "value"], [[k, _figure(v)] for k, v in figures.items()]))
        else:
            parts.append(_plain(figures))
    parts.append(
        "Figures named `*_lb_*` are lower bounds: the true value is at least this large at the stated confidence."
    )
    return "\n\n".join(parts)


def _figure(value: Any) -> str:
    if isinstance(value, dict) and "value" in value:
        text = fmt_estimate(value)
        extra = {k: v for k, v in value.items() if k not in ("value", "low", "high", "note")}
        if extra:
            text += " (" + ", ".join(f"{k} {_plain(v)}" for k, v in extra.items()) + ")"
        if value.get("note"):
            text += f"; {value['note']}"
        return text
    return _plain(value)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    return "n/a" if value is None else str(value)


def _strongest(entry: dict) -> str | None:
    metrics = entry["metrics"]
    rated = [a for a in metrics if metrics[a]["auc"].get("value") is not None]
    return max(rated, key=lambda a: metrics[a]["auc"]["value"]) if rated else None


def _over_steps(report: dict) -> str:
    fpr = curve_fpr(report)
    header = ["step", "strongest attack", "AUC"] + ([f"TPR at {pct(fpr)} FPR"] if fpr else []) + [
        "member loss",
        "non-member loss",
    ]
    rows = []
    for entry in report["audits"]:
        attack = _strongest(entry)
        m = entry["metrics"].get(attack) if attack else None
        row = [str(entry["step"]), attack or "none", fmt_estimate(m["auc"]) if m else "n/a"]
        if fpr:
            row.append(fmt_estimate(m["tpr_at_fpr"].get(repr(fpr))) if m else "n/a")
        row += [fmt_estimate(entry["member_nll"]), fmt_estimate(entry["nonmember_nll"])]
        rows.append(row)
    tpr_text = (
        f"right, the true-positive rate at {pct(fpr)} false-positive rate (chance = {pct(fpr)})"
        if fpr
        else "right, TPR at a low FPR, which these canaries cannot resolve at any measured level"
    )
    return "\n".join([
        "## Leakage over training",
        "",
        _table(header, rows),
        "",
        f"![Leakage curves: AUC and TPR per attack over training steps]({LEAKAGE_PNG})",
        "",
        f"`{LEAKAGE_PNG}` shows, per attack, on the left the AUC (0.5 = chance, 1 = every member "
        f"told apart) and on the {tpr_text}, over training steps. "
        "Shaded bands and error bars are the confidence intervals. Rising curves mean the model "
        "memorizes its canaries as it trains; a curve whose band stays around chance shows no "
        "measurable leakage at this canary count.",
    ])


def _roc(report: dict) -> str:
    final = final_audit(report)
    n_non = report["canaries"]["non_members"]
    return "\n".join([
        f"## ROC at the final audit (step {final['step']})",
        "",
        f"![ROC curves of each attack, log-log]({ROC_PNG})",
        "",
        f"`{ROC_PNG}` plots each attack's true-positive rate against its false-positive rate on "
        "logarithmic axes, so the low-FPR corner, where an attacker is confident about individual "
        "records, is visible. The dotted diagonal is chance. The dashed vertical line marks "
        f"1 / non-members ({pct(1 / n_non) if n_non else 'n/a'}): the curve left of it rests on "
        "zero false positives and says nothing about smaller FPRs.",
    ])


def _how_to_read(report: dict) -> str:
    level = f"{report['confidence']:.0%}"
    return "\n".join([
        "## How to read the numbers",
        "",
        f"- `0.812 [0.770, 0.850]` is a point estimate with its {level} confidence interval: with "
        f"{level} confidence the true value lies in the brackets. More canaries give narrower intervals.",
        "- **AUC**: probability that the attack scores a random member above a random non-member "
        "(0.5 = chance). DeLong interval.",
        "- **TPR at x% FPR**: share of members flagged when at most x% of non-members are; the "
        "figure that matters for individual privacy at low x. Exact Clopper–Pearson interval.",
        "- **Advantage**: the largest TPR − FPR over thresholds (0 = none). Bootstrap interval.",
        "- **Release gate**: a limit is *blocked* when the interval's lower bound exceeds it, *pass* "
        "when its upper bound is at or below it, *inconclusive* otherwise.",
    ])


def _caveats(report: dict) -> str:
    final = final_audit(report)
    by_text: dict[str, list[str]] = {}  # the same warning usually concerns every attack
    for name, m in final["metrics"].items():
        notes = [m["auc"].get("note"), m["advantage"].get("note"), *m.get("warnings", [])]
        for text in dict.fromkeys(n for n in notes if n):
            by_text.setdefault(text, []).append(name)
    items = [f"{text} ({', '.join(f'`{a}`' for a in names)})" for text, names in by_text.items()]
    items += [f"`{name}` skipped: {why}" for name, why in final.get("skipped", {}).items()]
    items += list(final.get("notes", []))
    if final.get("invalid_canaries"):
        items.append(f"{len(final['invalid_canaries'])} canaries had non-finite statistics and were left out.")
    items += [
        "The TPR interval covers the TPR at the threshold chosen on these non-members; the randomness of "
        "that threshold is not included.",
        "The advantage point estimate is optimistic (it maximizes over thresholds on the same canaries).",
        "Intervals hold per figure; judging the strongest of several attacks does not widen them for the "
        "multiple comparison.",
        "An audit measures leakage of these canaries; real training records may be memorized more or less "
        "(e.g. duplicated or unusual records).",
    ]
    return "## Caveats\n\n" + "\n".join(f"- {item}" for item in items)
