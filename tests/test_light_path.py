"""The torch-free light path: ``mia-guard --help``, ``mia-guard gate`` and ``import mia_guard.gate``
load neither torch nor transformers (CI machines that only gate a report stay fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from audit_histories import audited

from mia_guard._io import atomic_write_json
from mia_guard.gate import example_policy_path
from mia_guard.report.schema import build_report

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "opacus", "sklearn", "matplotlib")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("light") / "report.json"
    atomic_write_json(path, build_report(audited({0: 0.0, 100: 0.6}).history))
    return path


def loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which of :data:`HEAVY` it imported, and its exit code."""
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules], "code": code}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_lists_every_command_without_torch():
    got = loaded_after("""
        import contextlib, io
        from mia_guard.cli import main
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            try:
                main(["--help"])
            except SystemExit as exit:
                code = exit.code
        assert all(name in text.getvalue() for name in ("audit", "compare", "demo", "gate", "report")), text.getvalue()
    """)
    assert got == {"heavy": [], "code": 0}


def test_gate_decides_without_torch(report):
    got = loaded_after(f"""
        import contextlib, io
        from mia_guard.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["gate", {str(report)!r}, "--policy", {str(example_policy_path())!r}])
    """)
    assert got == {"heavy": [], "code": 1}  # the leaky report is blocked


def test_importing_the_gate_and_the_report_schema_loads_no_torch():
    got = loaded_after("""
        import mia_guard, mia_guard.gate, mia_guard.report.schema
        from mia_guard.gate import ReleasePolicy, evaluate_report
        code = 0
    """)
    assert got == {"heavy": [], "code": 0}
