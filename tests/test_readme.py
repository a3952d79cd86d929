"""Every Python block of README.md runs as written (and the command lines that use their
files), so a broken snippet fails CI; the two set-up commands exist in the Makefile."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from markdown_blocks import ROOT, run_block
from markdown_blocks import blocks as blocks_of

README = ROOT / "README.md"
#: Commands of README bash blocks that run on files a Python block of the README wrote.
RUNNABLE_COMMANDS = ("mia-guard audit ",)


def blocks(language: str) -> list[str]:
    return blocks_of(README, language)


PYTHON_BLOCKS = blocks("python")


def test_the_readme_has_the_blocks_these_tests_run():
    assert len(PYTHON_BLOCKS) >= 3
    commands = [line for block in blocks("bash") for line in block.splitlines() if line.startswith(RUNNABLE_COMMANDS)]
    assert commands, "the library section's command line"


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = PYTHON_BLOCKS[index]
    namespace = run_block(code, f"README.md python block {index}")
    if "Trainer(" in code:  # the quick start: a run with its report and a gate decision
        audit = namespace["audit"]
        assert audit.history.steps[0] == 0 and len(audit.history) >= 2
        assert (tmp_path / "quickstart_out" / "mia" / "report.json").exists()
        assert audit.last_decision is not None
        assert "extraction" in audit.history.last.extras
        runs = [d for d in (tmp_path / "quickstart_out" / "runs").iterdir() if d.is_dir()]
        assert len(runs) == 1 and any(p.name.endswith(".mia_guard") for p in runs[0].iterdir())
    if "auditor.history.save" in code:  # the library block: its command line runs on the files it wrote
        for block in blocks("bash"):
            for line in block.splitlines():
                if line.startswith(RUNNABLE_COMMANDS):
                    args = line.split("#")[0].split()[1:]
                    done = subprocess.run([sys.executable, "-m", "mia_guard.cli", *args], cwd=tmp_path,
                                          capture_output=True, text=True, timeout=600)
                    assert done.returncode == 0, done.stderr[-2000:]


def test_the_two_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}: ", makefile, flags=re.M)
        assert f"make {target}" in README.read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
