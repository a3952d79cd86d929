"""Bad reports for the release gate: real reports of a tiny trained GPT-2, mutated case by case.

:func:`build_reports` audits the conftest's ``trained_lm`` (128 credential canaries, 300
steps) with the real :class:`~mia_guard.Auditor` and writes real ``report.json`` documents:

* ``"leaky"``: audits of the untrained model (step 0) and the trained one (step 300), with
  the privacy analysis; every attack's AUC at step 300 is far above 0.6 (blocked);
* ``"clean"``: one audit of the untrained model (AUC near 0.5; passes ``max_auc = 0.75``).

:data:`CASES` mutates them as a careless tool or a doctored file would, and states the
exit code ``mia-guard gate`` must give (0 release, 1 blocked, 2 cannot decide; see
docs/gate.md). A case's ``mutate`` receives a deep copy of the report and returns the
document to write: a dict (serialized with ``NaN``/``Infinity`` tokens allowed), or
``str``/``bytes`` written as they are.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mia_guard import Auditor, CanarySet
from mia_guard.report.schema import build_report

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")
TRAINED_STEP = 300

#: Policies the cases use: the loss attack alone, so one mutated figure decides.
LOSS_AUC = 'attack = "loss"\nmax_auc = 0.6\n'
LOSS_AUC_LOOSE = 'attack = "loss"\nmax_auc = 0.75\n'
RELEASE_IF_UNSURE = 'on_inconclusive = "pass"\n'


def audit_report(canaries: CanarySet, tokenizer: Any, models: list[tuple[int, Any]], *, privacy: bool = True,
                 attacks: tuple[str, ...] = ATTACKS) -> dict:
    """The report document of real audits of ``models`` (``(step, model)`` in step order)."""
    auditor = Auditor(canaries, tokenizer, attacks=attacks, analyses=("privacy",) if privacy else (), seed=0)
    for step, model in models:
        auditor.audit(model, step)
    return build_report(auditor.history, canaries=canaries)


def build_reports(trained_lm: Any) -> dict[str, dict]:
    """``{"leaky": ..., "clean": ...}`` report documents (see the module docstring)."""
    lm = trained_lm
    return {
        "leaky": audit_report(lm.canaries, lm.tokenizer, [(0, lm.untrained), (TRAINED_STEP, lm.model)]),
        "clean": audit_report(lm.canaries, lm.tokenizer, [(0, lm.untrained)]),
    }


def subset(canaries: CanarySet, indices: list[int]) -> CanarySet:
    """The canaries at ``indices`` with their membership (a real, smaller audit of the same model)."""
    return CanarySet(
        [canaries[i] for i in indices], canaries.is_member[indices], kind=canaries.kind, seed=canaries.seed,
        split="custom", template=canaries.template,
    )


def write_document(path: Path, document: Any) -> Path:
    if isinstance(document, bytes):
        path.write_bytes(document)
    elif isinstance(document, str):
        path.write_text(document, encoding="utf-8")
    else:
        path.write_text(json.dumps(document, indent=1, allow_nan=True), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- mutations


def final(report: dict) -> dict:
    return report["audits"][-1]


def loss(report: dict) -> dict:
    return final(report)["metrics"]["loss"]


def privacy(report: dict) -> dict:
    return final(report)["extras"]["privacy"]


def _parent(report: dict, path: tuple) -> tuple[Any, Any]:
    """The container holding ``path``'s last key, and that key (``"final-audit"`` first
    stands for the last audit)."""
    node, keys = report, list(path)
    if keys and keys[0] == "final-audit":
        node, keys = final(report), keys[1:]
    for key in keys[:-1]:
        node = node[key]
    return node, keys[-1]


def setting(*path: Any, value: Any) -> Callable[[dict], dict]:
    """A mutation that sets ``report[path...] = value``."""

    def mutate(report: dict) -> dict:
        node, key = _parent(report, path)
        node[key] = value
        return report

    return mutate


def deleting(*path: Any) -> Callable[[dict], dict]:
    """A mutation that deletes ``report[path...]``."""

    def mutate(report: dict) -> dict:
        node, key = _parent(report, path)
        del node[key]
        return report

    return mutate


def estimate(value: Any, low: Any, high: Any, confidence: Any = 0.95) -> dict:
    return {"value": value, "low": low, "high": high, "confidence": confidence, "note": ""}


def _swap_audits(report: dict) -> dict:
    report["audits"].reverse()
    return report


def _duplicate_last_step(report: dict) -> dict:
    report["audits"][0]["step"] = report["audits"][-1]["step"]
    return report


def _nested(depth: int) -> Callable[[dict], str]:
    def mutate(report: dict) -> str:
        report["run_info"] = {"nested": "@"}
        return json.dumps(report).replace('"@"', "[" * depth + "]" * depth)

    return mutate


def _literal(path: tuple, token: str) -> Callable[[dict], str]:
    """Write ``token`` verbatim (e.g. ``1e999``) at ``path``."""

    def mutate(report: dict) -> str:
        setting(*path, value="@@literal@@")(report)
        return json.dumps(report).replace('"@@literal@@"', token)

    return mutate


def _no_loss_interval(report: dict) -> dict:
    auc = loss(report)["auc"]
    auc["value"], auc["low"], auc["high"] = 0.55, None, None
    return report


def _auc_everywhere(value: Any) -> Callable[[dict], dict]:
    def mutate(report: dict) -> dict:
        loss(report)["auc"] = estimate(value, value, value)
        return report

    return mutate


def _auc_confidence(value: Any) -> Callable[[dict], dict]:
    """The loss AUC made to pass a 0.6 limit, with its interval's confidence replaced."""

    def mutate(report: dict) -> dict:
        loss(report)["auc"] = estimate(0.52, 0.45, 0.58, value)
        return report

    return mutate


def _all_confidences(level: float) -> Callable[[dict], dict]:
    """Every interval (and the report) at ``level``: a report audited at another confidence."""

    def mutate(report: dict) -> dict:
        report["confidence"] = level
        for audit in report["audits"]:
            for metrics in audit["metrics"].values():
                for est in [metrics["auc"], metrics["advantage"], *metrics["tpr_at_fpr"].values()]:
                    est["confidence"] = level
            for key in ("member_nll", "nonmember_nll"):
                audit[key]["confidence"] = level
            if "privacy" in audit["extras"]:
                audit["extras"]["privacy"]["confidence"] = level
        return report

    return mutate


def _invalid(share: int) -> Callable[[dict], dict]:
    """``share`` canaries marked invalid, the metrics' counts made consistent with it."""

    def mutate(report: dict) -> dict:
        audit = final(report)
        audit["invalid_canaries"] = list(range(share))
        count, members = report["canaries"]["count"], report["canaries"]["members"]
        invalid_members = round(share * members / count)
        for metrics in audit["metrics"].values():
            metrics["n_members"] = members - invalid_members
            metrics["n_nonmembers"] = count - members - (share - invalid_members)
        return report

    return mutate


def _inconsistent_counts(report: dict) -> dict:
    loss(report)["n_members"] += 5
    return report


def _no_privacy(report: dict) -> dict:
    final(report)["extras"] = {}
    return report


def _skip_loss(report: dict) -> dict:
    audit = final(report)
    del audit["metrics"]["loss"]
    audit["skipped"]["loss"] = "the attack raised: broken"
    return report


def _skip_every_attack(report: dict) -> dict:
    audit = final(report)
    audit["skipped"] = {name: "the attack raised: broken" for name in audit["metrics"]}
    audit["metrics"] = {}
    report["final"]["strongest_attack"] = None
    return report


def _privacy_plain(name: str, value: Any) -> Callable[[dict], dict]:
    def mutate(report: dict) -> dict:
        priv = privacy(report)
        for key in (name, f"{name}_low", f"{name}_high"):
            priv.pop(key, None)
        priv[name] = value
        return report

    return mutate


def _privacy_object(name: str, figure: Any) -> Callable[[dict], dict]:
    def mutate(report: dict) -> dict:
        priv = privacy(report)
        for key in (f"{name}_low", f"{name}_high"):
            priv.pop(key, None)
        priv[name] = figure
        return report

    return mutate


def _attack_name_mismatch(report: dict) -> dict:
    loss(report)["attack"] = "zlib"
    return report


def _failed_final_audit(report: dict) -> dict:
    """The audit of the final model failed (recorded as such): the audit before it must not decide."""
    report["audits"].pop()
    report["failed_audits"] = [{"step": TRAINED_STEP, "reason": "scoring failed: non-finite logits for every canary"}]
    report["final"]["step"] = report["audits"][-1]["step"]
    return report


@dataclass(frozen=True)
class Case:
    """One bad input: how the report (or policy) is spoiled and the exit code the gate must give."""

    name: str
    mutate: Callable[[dict], Any]
    exit_code: int
    policy: str = LOSS_AUC
    says: str = ""  # a fragment of the error (exit 2) or of the explanation (exit 0/1)
    base: str = "leaky"


def _case(name: str, mutate: Callable[[dict], Any], exit_code: int, says: str = "", policy: str = LOSS_AUC,
          base: str = "leaky") -> Case:
    return Case(name, mutate, exit_code, policy, says, base)


def _same(report: dict) -> dict:
    return report


_F = ("final-audit",)
_LOSS = (*_F, "metrics", "loss")
_PRIV = (*_F, "extras", "privacy")

CASES: tuple[Case, ...] = (
    # -------------------------------------------------------------- the unspoiled reports (sanity)
    _case("leaky report blocks", _same, 1, "BLOCKED"),
    _case("clean report releases", _same, 0, "PASS", policy=LOSS_AUC_LOOSE, base="clean"),
    # -------------------------------------------------------------- not a readable report
    _case("truncated JSON", lambda r: json.dumps(r)[:5000], 2, "not valid JSON"),
    _case("empty file", lambda r: "", 2, "not valid JSON"),
    _case("not UTF-8", lambda r: b"\xff\xfe" + json.dumps(r).encode("utf-16-le"), 2, "not UTF-8"),
    _case("JSON array at the top", lambda r: [r], 2, "not a mia_guard report"),
    _case("JSON null at the top", lambda r: None, 2, "not a mia_guard report"),
    _case("other format", setting("format", value="mia_guard.history"), 2, "not a mia_guard report"),
    _case("schema version 2", setting("schema_version", value=2), 2, "schema version"),
    _case("schema version as text", setting("schema_version", value="1"), 2, "schema version"),
    _case("nested 100000 deep", _nested(100_000), 2, "nested"),
    _case("nested 900 deep in run_info", _nested(900), 1, "BLOCKED"),
    # -------------------------------------------------------------- top-level fields
    _case("confidence missing", deleting("confidence"), 2, "confidence"),
    _case("confidence is text", setting("confidence", value="0.95"), 2, "confidence"),
    _case("confidence NaN", setting("confidence", value=float("nan")), 2, "confidence"),
    _case("confidence 1.5", setting("confidence", value=1.5), 2, "confidence"),
    _case("confidence true", setting("confidence", value=True), 2, "confidence"),
    _case("fprs missing", deleting("fprs"), 2, "fprs"),
    _case("fprs hold text", setting("fprs", value=["0.01"]), 2, "fprs[0]"),
    _case("fprs out of range", setting("fprs", value=[0.0, 1.5]), 2, "fprs[0]"),
    _case("canaries missing", deleting("canaries"), 2, "canaries"),
    _case("canary count negative", setting("canaries", "count", value=-128), 2, "canaries.count"),
    _case("canary classes do not add up", setting("canaries", "members", value=1000), 2, "canaries"),
    _case("audits empty", setting("audits", value=[]), 2, "audits"),
    _case("audits not a list", setting("audits", value={"0": {}}), 2, "audits"),
    _case("audit not an object", setting("audits", 0, value="step 0"), 2, "audits[0]"),
    _case("step missing", deleting(*_F, "step"), 2, "audits[1].step"),
    _case("step fractional", setting(*_F, "step", value=300.5), 2, "audits[1].step"),
    _case("step true", setting(*_F, "step", value=True), 2, "audits[1].step"),
    _case("step negative", setting("audits", 0, "step", value=-1), 2, "audits[0].step"),
    _case("audits out of step order", _swap_audits, 2, "step order", policy=LOSS_AUC_LOOSE),
    _case("two audits at one step", _duplicate_last_step, 2, "step order"),
    _case("final names another step", setting("final", "step", value=100), 2, "final.step"),
    _case("final missing", deleting("final"), 2, "final"),
    _case("final names an unknown attack", setting("final", "strongest_attack", value="lossy"), 2, "strongest_attack"),
    _case("audit of the final model failed, release if unsure", _failed_final_audit, 1, "failed",
          policy=RELEASE_IF_UNSURE + LOSS_AUC_LOOSE),
    _case("failed audits not a list", setting("failed_audits", value="none"), 2, "failed_audits"),
    _case("gate record is text", setting("gate", value="pass"), 2, "gate"),
    _case("timestamp is text", setting(*_F, "timestamp", value="yesterday"), 2, "timestamp"),
    _case("notes not a list", setting(*_F, "notes", value="fine"), 2, "notes"),
    # -------------------------------------------------------------- attack metrics
    _case("metrics not an object", setting(*_F, "metrics", value=[]), 2, "metrics"),
    _case("attack entry not an object", setting(*_LOSS, value=0.5), 2, "metrics.loss"),
    _case("attack entry without auc", deleting(*_LOSS, "auc"), 2, "metrics.loss.auc"),
    _case("auc not an object", setting(*_LOSS, "auc", value=0.5), 2, "metrics.loss.auc"),
    _case("auc value is text", setting(*_LOSS, "auc", "value", value="0.5"), 2, "auc.value"),
    _case("auc -Infinity everywhere", _auc_everywhere(float("-inf")), 2, "auc.value"),
    _case("auc NaN everywhere", _auc_everywhere(float("nan")), 2, "auc.value"),
    _case("auc 1e999", _literal((*_LOSS, "auc", "value"), "1e999"), 2, "auc.value"),
    _case("auc 5.0 in [-3, 0.1]", setting(*_LOSS, "auc", value=estimate(5.0, -3.0, 0.1)), 2, "auc"),
    _case("auc above its interval", setting(*_LOSS, "auc", value=estimate(0.9, 0.3, 0.5)), 2, "auc"),
    _case("auc interval inverted", setting(*_LOSS, "auc", value=estimate(0.5, 0.58, 0.42)), 2, "auc"),
    _case("auc low below 0", setting(*_LOSS, "auc", value=estimate(0.3, -0.2, 0.55)), 2, "auc.low"),
    _case("auc without interval", _no_loss_interval, 2, "no interval"),
    _case("auc unresolvable with an interval", setting(*_LOSS, "auc", value=estimate(None, 0.4, 0.5)), 2, "auc"),
    _case("auc confidence null, policy 0.99", _auc_confidence(None), 2, "auc.confidence",
          policy=LOSS_AUC + "confidence = 0.99\n"),
    _case("auc confidence NaN, policy 0.99", _auc_confidence(float("nan")), 2, "auc.confidence",
          policy=LOSS_AUC + "confidence = 0.99\n"),
    _case("auc confidence missing", lambda r: (loss(r)["auc"].pop("confidence"), r)[1], 2, "auc.confidence"),
    _case("auc confidence is text", _auc_confidence("0.95"), 2, "auc.confidence"),
    _case("auc confidence below the report's", _auc_confidence(0.5), 2, "auc.confidence"),
    _case("report at 0.99, policy 0.95", _all_confidences(0.99), 1, "BLOCKED"),
    _case("report at 0.9, policy 0.95", _all_confidences(0.9), 2, "requires 0.95 confidence"),
    _case("auc note not text", setting(*_LOSS, "auc", "note", value=7), 2, "auc.note"),
    _case("tpr table not an object", setting(*_LOSS, "tpr_at_fpr", value=[0.1]), 2, "tpr_at_fpr"),
    _case("tpr at an FPR that is not a number", setting(*_LOSS, "tpr_at_fpr", "ten", value=estimate(0.1, 0, 0.2)),
          2, "tpr_at_fpr"),
    _case("tpr above 1", setting(*_LOSS, "tpr_at_fpr", "0.1", value=estimate(1.5, 1.2, 1.8)), 2, "tpr_at_fpr"),
    _case("tpr -Infinity passes its limit", setting(*_LOSS, "tpr_at_fpr", "0.1", value=estimate(*[float("-inf")] * 3)),
          2, "tpr_at_fpr", policy='attack = "loss"\n[max_tpr_at_fpr]\n"0.1" = 0.3\n'),
    _case("advantage negative", setting(*_LOSS, "advantage", value=estimate(-0.5, -0.6, -0.4)), 2, "advantage",
          policy='attack = "loss"\nmax_advantage = 0.2\n'),
    _case("advantage above 1", setting(*_LOSS, "advantage", "high", value=1.5), 2, "advantage.high"),
    _case("n_members missing", deleting(*_LOSS, "n_members"), 2, "n_members"),
    _case("n_members true", setting(*_LOSS, "n_members", value=True), 2, "n_members"),
    _case("n_members do not add up", _inconsistent_counts, 2, "n_members"),
    _case("attack entry names another attack", _attack_name_mismatch, 2, "metrics.loss.attack"),
    _case("warnings not a list", setting(*_LOSS, "warnings", value="none"), 2, "warnings"),
    _case("member loss negative", setting(*_F, "member_nll", "value", value=-1.0), 2, "member_nll"),
    _case("member loss not an object", setting(*_F, "member_nll", value=2.0), 2, "member_nll"),
    _case("skipped not an object", setting(*_F, "skipped", value=["loss"]), 2, "skipped"),
    _case("skip reason not text", setting(*_F, "skipped", value={"seq_lira": 3}), 2, "skipped"),
    _case("attack both measured and skipped", setting(*_F, "skipped", value={"loss": "x"}), 2, "skipped"),
    # -------------------------------------------------------------- invalid canaries
    _case("invalid canaries not a list", setting(*_F, "invalid_canaries", value=5), 2, "invalid_canaries"),
    _case("invalid canary index out of range", setting(*_F, "invalid_canaries", value=[4096]), 2, "invalid_canaries"),
    _case("invalid canary listed twice", setting(*_F, "invalid_canaries", value=[3, 3]), 2, "invalid_canaries"),
    _case("122 of 128 canaries invalid", _invalid(122), 1, "invalid", policy=RELEASE_IF_UNSURE + LOSS_AUC_LOOSE,
          base="clean"),
    _case("20 of 128 invalid, share allowed", _invalid(20), 0, "PASS",
          policy=RELEASE_IF_UNSURE + LOSS_AUC_LOOSE + "max_invalid_share = 0.2\nmin_canaries_per_class = 10\n",
          base="clean"),
    # -------------------------------------------------------------- privacy figures
    _case("extras not an object", setting(*_F, "extras", value=[]), 2, "extras"),
    _case("privacy not an object", setting(*_F, "extras", "privacy", value="none"), 2, "privacy"),
    _case("epsilon lower bound -5", _privacy_plain("epsilon_lb_one_run", -5.0), 2, "epsilon_lb_one_run",
          policy="max_epsilon_lower_bound = 1.0\n"),
    _case("epsilon lower bound NaN", _privacy_plain("epsilon_lb_one_run", float("nan")), 2, "epsilon_lb_one_run",
          policy="max_epsilon_lower_bound = 1.0\n"),
    _case("epsilon lower bound Infinity", _privacy_plain("epsilon_lb_two_point", float("inf")), 2,
          "epsilon_lb_two_point", policy="max_epsilon_lower_bound = 1.0\n"),
    _case("epsilon lower bound is text", _privacy_plain("epsilon_lb_one_run", "0.1"), 2, "epsilon_lb_one_run",
          policy="max_epsilon_lower_bound = 1.0\n"),
    _case("exposure negative", _privacy_object("exposure_max", estimate(-3.0, -4.0, -2.0)), 2, "exposure_max",
          policy="max_exposure = 20.0\n"),
    _case("exposure interval inverted", _privacy_object("exposure_max", estimate(5.0, 9.0, 2.0)), 2, "exposure_max",
          policy="max_exposure = 20.0\n"),
    _case("exposure sibling interval excludes it", setting(*_PRIV, "exposure_max_high", value=-1.0), 2, "exposure_max",
          policy="max_exposure = 20.0\n"),
    _case("extraction rate 1.5", _privacy_object("extraction_rate", estimate(1.5, 1.2, 1.8)), 2, "extraction_rate",
          policy="max_extraction_rate = 0.5\n"),
    _case("privacy figure without value", _privacy_object("exposure_max", {"low": 1.0}), 2, "exposure_max",
          policy="max_exposure = 20.0\n"),
    _case("privacy figure at 0.9 confidence", _privacy_object("exposure_max", estimate(1.0, 0.5, 2.0, 0.9)), 2,
          "exposure_max", policy="max_exposure = 20.0\n"),
    _case("exposure without interval, release if unsure", _privacy_plain("exposure_max", 1.0), 1, "no interval",
          policy=RELEASE_IF_UNSURE + "max_exposure = 20.0\n"),
    # -------------------------------------------------------------- figures never computed
    _case("privacy never computed, release if unsure", _no_privacy, 1, "did not compute",
          policy=RELEASE_IF_UNSURE + "max_epsilon_lower_bound = 8.0\n"),
    _case("named attack skipped, release if unsure", _skip_loss, 1, "skipped",
          policy=RELEASE_IF_UNSURE + LOSS_AUC_LOOSE, base="clean"),
    _case("every attack skipped, release if unsure", _skip_every_attack, 1, "no attack",
          policy=RELEASE_IF_UNSURE + "max_auc = 0.75\n", base="clean"),
    # -------------------------------------------------------------- policies that cannot be judged
    _case("max_auc = 1.0 cannot be exceeded", _same, 2, "max_auc", policy="max_auc = 1.0\n"),
    _case("max_advantage = 1.0 cannot be exceeded", _same, 2, "max_advantage", policy="max_advantage = 1.0\n"),
    _case("max TPR 1.0 cannot be exceeded", _same, 2, "max_tpr_at_fpr", policy='[max_tpr_at_fpr]\n"0.1" = 1.0\n'),
    _case("max_extraction_rate = 1.0 cannot be exceeded", _same, 2, "max_extraction_rate",
          policy="max_extraction_rate = 1.0\n"),
    _case("max_exposure = inf", _same, 2, "max_exposure", policy="max_exposure = inf\n"),
    _case("max_epsilon_lower_bound = inf", _same, 2, "max_epsilon_lower_bound",
          policy="max_epsilon_lower_bound = inf\n"),
    _case("one limit unexceedable among others", _same, 2, "max_advantage",
          policy="max_auc = 0.6\nmax_advantage = 1.0\n"),
    _case("min_canaries_per_class 0", _same, 2, "min_canaries_per_class", policy=LOSS_AUC + "min_canaries_per_class = 0\n"),
    _case("min_canaries_per_class fractional", _same, 2, "min_canaries_per_class",
          policy=LOSS_AUC + "min_canaries_per_class = 2.5\n"),
    _case("max_invalid_share 1.5", _same, 2, "max_invalid_share", policy=LOSS_AUC + "max_invalid_share = 1.5\n"),
    _case("fewer canaries than the policy needs", _same, 1, "min_canaries_per_class",
          policy=RELEASE_IF_UNSURE + LOSS_AUC_LOOSE + "min_canaries_per_class = 100\n", base="clean"),
    _case("fewer canaries than needed, still blocked", _same, 1, "BLOCKED",
          policy=LOSS_AUC + "min_canaries_per_class = 100\n"),
)


def mutated(reports: dict[str, dict], case: Case) -> Any:
    return case.mutate(copy.deepcopy(reports[case.base]))
