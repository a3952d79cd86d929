"""Fenced code blocks of the repository's Markdown files, for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def blocks(path: Path, language: str) -> list[str]:
    """The fenced ``language`` blocks of the Markdown file ``path``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", Path(path).read_text(encoding="utf-8"), flags=re.S | re.M)


def run_block(code: str, label: str) -> dict:
    """Execute one block in a fresh namespace (as a script would) and return the namespace."""
    namespace: dict = {"__name__": "__doc_block__"}
    exec(compile(code, label, "exec"), namespace)  # noqa: S102 - the repository's own documentation
    return namespace
