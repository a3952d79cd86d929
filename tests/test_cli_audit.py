"""`mia-guard audit` on a saved model directory."""

from mia_guard import AuditHistory
from mia_guard.cli import main


def test_cli_audit_prints_table_and_writes_history(trained_lm, tmp_path, capsys):
    out = tmp_path / "audit.json"
    code = main(["audit", "--model", str(trained_lm.directory), "--canaries",
                 str(trained_lm.directory / "canaries.json"), "--output", str(out), "--step", "300"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "min_k_plus_plus" in printed and "step 300" in printed
    history = AuditHistory.load(out)
    assert history.last.metrics["loss"].auc.value > 0.9


def test_cli_audit_bad_inputs_exit_2(trained_lm, tmp_path, capsys):
    code = main(["audit", "--model", str(tmp_path / "nope"), "--canaries", str(trained_lm.directory / "canaries.json")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    code = main(["audit", "--model", str(trained_lm.directory), "--canaries", str(tmp_path / "missing.json")])
    assert code == 2
