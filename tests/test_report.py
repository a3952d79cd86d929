"""Report files: report.json (schema, values, round trip), report.md, leakage.png, roc.png, and `mia-guard report`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from audit_histories import ATTACKS, audited
from matplotlib.image import imread

from mia_guard import AuditHistory
from mia_guard.cli import main
from mia_guard.gate import ReleasePolicy, evaluate_result
from mia_guard.report.files import REPORT_FILES, build_report, load_report, write_report
from mia_guard.stats.metrics import AttackMetrics

STEPS = {0: 0.0, 100: 0.25, 200: 0.6}
PRIVACY = {"epsilon_lb_one_run": {"value": 1.7, "confidence": 0.95, "attack": "loss"}, "exposure_max": 12.5}


@pytest.fixture(scope="module")
def auditor():
    auditor = audited(STEPS)
    auditor.history.last.extras["privacy"] = dict(PRIVACY)
    return auditor


@pytest.fixture(scope="module")
def written(auditor, tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    decision = evaluate_result(ReleasePolicy(max_auc=0.6), auditor.history.last)
    paths = write_report(
        auditor.history, directory, canaries=auditor.canaries, decision=decision,
        run_info={"dp_epsilon": 8.0, "training_args": {"learning_rate": 1e-3, "steps": 200}},
    )
    return paths, decision


def test_write_report_writes_the_four_files_and_nothing_else(written):
    paths, _ = written
    assert set(paths) == set(REPORT_FILES)
    for key, path in paths.items():
        assert path.name == REPORT_FILES[key] and path.stat().st_size > 0
    assert sorted(p.name for p in paths["json"].parent.iterdir()) == sorted(REPORT_FILES.values())  # no temp files


def test_report_json_is_schema_versioned_and_round_trips(written):
    paths, _ = written
    raw = json.loads(paths["json"].read_text())
    assert raw.pop("checksum").startswith("sha256:")  # verified and dropped by load_report
    assert raw["format"] == "mia_guard.report" and raw["schema_version"] == 1
    assert load_report(paths["json"]) == raw
    assert load_report(paths["json"].parent) == raw  # a directory holding report.json works too


def test_report_values_equal_the_audit_results(auditor, written):
    paths, decision = written
    report = load_report(paths["json"])
    history = auditor.history
    assert [a["step"] for a in report["audits"]] == history.steps
    assert report["fprs"] == list(history.fprs) and report["confidence"] == history.confidence
    for entry, result in zip(report["audits"], history.results):
        assert set(entry["metrics"]) == set(result.metrics) == set(ATTACKS)
        for name, metrics in result.metrics.items():
            assert AttackMetrics.from_dict(entry["metrics"][name]).to_dict() == metrics.to_dict()
            assert entry["metrics"][name]["auc"]["value"] == metrics.auc.value
            assert entry["metrics"][name]["auc"]["low"] == metrics.auc.low
        assert entry["member_nll"] == result.member_nll.to_dict()
        assert entry["nonmember_nll"] == result.nonmember_nll.to_dict()
        assert entry["skipped"] == result.skipped and entry["notes"] == result.notes
        assert "stats" not in entry and "scores" not in entry  # figures only, no per-canary data
    assert report["audits"][-1]["extras"]["privacy"] == PRIVACY
    assert report["final"]["step"] == 200
    assert report["final"]["strongest_attack"] == history.last.best_attack()
    assert report["gate"] == decision.to_dict()
    assert report["run_info"] == {"dp_epsilon": 8.0, "training_args": {"learning_rate": 1e-3, "steps": 200}}


def test_report_summarizes_the_canaries(auditor, written):
    canaries = auditor.canaries
    summary = load_report(written[0]["json"])["canaries"]
    assert summary["hash"] == canaries.content_hash
    assert summary["count"] == len(canaries) and summary["members"] == int(canaries.is_member.sum())
    assert summary["members"] + summary["non_members"] == summary["count"]
    assert summary["template"] == "code_credential"
    assert summary["secret_space_bits"] == pytest.approx(canaries.template.secret_space_bits)


def test_unresolvable_tpr_is_null_in_json(written):
    # 400 canaries: about 200 non-members cannot resolve 0.1% FPR
    tpr = load_report(written[0]["json"])["audits"][-1]["metrics"]["loss"]["tpr_at_fpr"]["0.001"]
    assert tpr["value"] is None and "needs >= 1000 non-members" in tpr["note"]


def test_pngs_are_valid_images(written):
    paths, _ = written
    for key in ("leakage", "roc"):
        image = imread(paths[key])
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert image.std() > 0.01  # something was drawn


def test_markdown_explains_the_audit(written):
    paths, decision = written
    text = paths["markdown"].read_text()
    for attack in ATTACKS:
        assert f"| {attack}" in text or f"**{attack}**" in text
    assert "## Release verdict" in text and f"**{decision.verdict.upper()}" in text
    for reason in decision.reasons:
        assert reason in text
    assert "](leakage.png)" in text and "](roc.png)" in text
    assert "95% confidence interval" in text
    assert "not resolvable" in text  # the 0.1% FPR caveat
    assert "epsilon_lb_one_run" in text and "dp_epsilon" in text
    assert "## Leakage over training" in text and "| 200 |" in text


def test_report_without_decision_says_no_policy_was_applied(auditor, tmp_path):
    paths = write_report(auditor.history, tmp_path)
    assert load_report(paths["json"])["gate"] is None
    assert "No release policy was applied" in paths["markdown"].read_text()
    assert load_report(paths["json"])["canaries"]["template"] is None  # no CanarySet given


def test_rewriting_replaces_the_files(auditor, tmp_path):
    write_report(auditor.history, tmp_path, run_info={"run": 1})
    paths = write_report(auditor.history, tmp_path, run_info={"run": 2})
    assert load_report(paths["json"])["run_info"] == {"run": 2}


def test_invalid_canaries_are_left_out_of_the_roc(tmp_path):
    auditor = audited({0: 0.4}, n=200, nan_rows=(3, 7))
    assert np.isnan(auditor.history.last.scores["loss"][[3, 7]]).all()
    paths = write_report(auditor.history, tmp_path)
    assert imread(paths["roc"]).ndim == 3
    assert load_report(paths["json"])["audits"][0]["invalid_canaries"] == [3, 7]
    assert "canaries had NaN/inf token statistics" in paths["markdown"].read_text()


def test_write_report_rejects_bad_input(auditor, tmp_path):
    empty = AuditHistory(auditor.history.canary_hash, auditor.history.is_member, (0.01,), 0.95)
    with pytest.raises(ValueError, match="no audits"):
        write_report(empty, tmp_path)
    other = audited({0: 0.0}, n=100, seed=1)
    with pytest.raises(ValueError, match="not the ones this history audited"):
        build_report(auditor.history, canaries=other.canaries)
    with pytest.raises(ValueError, match="run_info.*object.*JSON cannot store"):
        build_report(auditor.history, run_info={"model": object()})
    assert not (tmp_path / "report.json").exists()


def test_numpy_values_in_extras_become_json(tmp_path):
    auditor = audited({0: 0.3}, n=100)
    auditor.history.last.extras["privacy"] = {"exposure_max": np.float32(3.5), "ranks": np.arange(3), "nan": math.nan}
    report = load_report(write_report(auditor.history, tmp_path)["json"])
    assert report["audits"][0]["extras"]["privacy"] == {"exposure_max": 3.5, "ranks": [0, 1, 2], "nan": None}


# ------------------------------------------------------------------ load_report errors


def test_load_report_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*mia-guard report"):
        load_report(tmp_path / "report.json")


def test_load_report_truncated_file(written, tmp_path):
    text = written[0]["json"].read_text()
    (tmp_path / "report.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="fails its checksum.*truncated"):
        load_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text(text[text.index('"format"') - 1 :][: len(text) // 2])  # no seal left
    with pytest.raises(ValueError, match="not valid JSON.*corrupt or truncated"):
        load_report(tmp_path / "report.json")


def test_load_report_wrong_format_and_version(auditor, written, tmp_path):
    path = tmp_path / "history.json"
    auditor.history.save(path)
    with pytest.raises(ValueError, match="not a mia_guard report.*'mia_guard.history'"):
        load_report(path)
    report = json.loads(written[0]["json"].read_text())
    del report["checksum"]  # a report from a version that wrote none is read without one
    report["schema_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="schema version 99"):
        load_report(tmp_path / "future.json")
    report["schema_version"] = 1
    del report["audits"][0]["metrics"]
    (tmp_path / "broken.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match=r"malformed: audits\[0\].metrics"):
        load_report(tmp_path / "broken.json")


# ------------------------------------------------------------------ mia-guard report


def test_cli_report_rewrites_files_from_history(auditor, tmp_path, capsys):
    auditor.history.save(tmp_path / "history.json")
    auditor.canaries.save(tmp_path / "canaries.json")
    (tmp_path / "run_info.json").write_text(json.dumps({"dp_epsilon": 3.0}))
    policy = tmp_path / "policy.toml"
    policy.write_text("max_auc = 0.6\n")
    assert main(["report", str(tmp_path), "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "BLOCKED" in out
    report = load_report(tmp_path / "report.json")
    assert report["gate"]["verdict"] == "blocked"
    assert report["run_info"] == {"dp_epsilon": 3.0}
    assert report["canaries"]["template"] == "code_credential"
    assert all((tmp_path / name).is_file() for name in REPORT_FILES.values())


def test_an_edited_report_is_refused_not_used(auditor, tmp_path):
    write_report(auditor.history, tmp_path)
    path = tmp_path / "report.json"
    text = path.read_text()
    assert text.startswith('{\n  "checksum": "sha256:')
    data = json.loads(text)
    data["audits"][-1]["metrics"]["loss"]["auc"]["value"] = 0.5  # hand-lowered leakage
    path.write_text(json.dumps(data, indent=2))
    with pytest.raises(ValueError, match=r"report .*report.json fails its checksum.*mia-guard report RUN_DIR"):
        load_report(path)


def test_cli_report_without_history_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "history.json does not exist" in capsys.readouterr().err


def test_cli_report_with_corrupt_history_exits_2(auditor, tmp_path, capsys):
    auditor.history.save(tmp_path / "history.json")
    text = (tmp_path / "history.json").read_text()
    (tmp_path / "history.json").write_text(text[: len(text) // 2])
    assert main(["report", str(tmp_path)]) == 2
    assert "history.json fails its checksum" in capsys.readouterr().err
    (tmp_path / "history.json").write_text(text)
    record = next(p for p in tmp_path.glob("history-*/000001-step*.json") if not p.name.endswith(".stats.json"))
    record.write_bytes(record.read_bytes()[:-20])
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"figures of the audit at step {auditor.history.steps[1]} ({record})" in err and "truncated" in err
    assert not (tmp_path / "report.json").exists()


def test_cli_report_keeps_the_run_info_of_the_report_it_replaces(auditor, tmp_path):
    auditor.history.save(tmp_path / "history.json")
    write_report(auditor.history, tmp_path, run_info={"dp_epsilon": 4.0, "learning_rate": 5e-4})
    assert main(["report", str(tmp_path)]) == 0
    assert load_report(tmp_path / "report.json")["run_info"] == {"dp_epsilon": 4.0, "learning_rate": 5e-4}
    (tmp_path / "run_info.json").write_text(json.dumps({"dp_epsilon": 2.0}))
    assert main(["report", str(tmp_path)]) == 0
    assert load_report(tmp_path / "report.json")["run_info"] == {"dp_epsilon": 2.0}
