"""Consistency checks of canaries and of the data they are inserted into.

* :func:`check_distinct`: no two canaries alike. A canary listed twice would be a member
  and a non-member at once, or count twice; every :class:`~mia_guard.CanarySet`
  constructor (``CanarySet(...)``, ``generate``, ``from_texts``, ``from_token_ids``,
  ``load``) refuses duplicates through it.
* :func:`check_secrets`: a templated canary's ``secret`` is exactly ``text[secret_span]``.
  The scored positions are found from the span, so a hand-edited file whose hash was
  recomputed would otherwise score the wrong characters.
* :func:`check_rows`: every row of a list the canaries are inserted into has the type
  (and, for dicts, the fields) of the first, so canary rows match all of them.
"""

from __future__ import annotations

from typing import Any, Sequence

#: Rows named in one error at most.
MAX_NAMED = 5


def check_distinct(canaries: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming the first repeated canary (same text, or same token ids)."""
    seen: dict[Any, int] = {}
    for index, canary in enumerate(canaries):
        key = (canary.text, canary.token_ids)
        if key in seen:
            shown = repr(canary.text[:60]) if canary.text is not None else f"token ids {list(canary.token_ids)[:8]}..."
            raise ValueError(
                f"canaries {seen[key]} and {index} are the same canary ({shown}); membership of a duplicate is "
                "ambiguous: every canary must be distinct"
            )
        seen[key] = index


def check_secrets(canaries: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless each canary with a secret has ``text[secret_span] == secret``."""
    for index, canary in enumerate(canaries):
        if canary.secret is None and canary.secret_span is None:
            continue
        span = canary.secret_span
        if canary.text is None or canary.secret is None or span is None or len(span) != 2:
            raise ValueError(
                f"canary {index} has secret {canary.secret!r} and secret_span {span!r}: a secret needs its text, "
                "the secret and its (start, end) span together"
            )
        start, end = span
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(canary.text)):
            raise ValueError(
                f"canary {index} has secret_span {list(span)}, outside its {len(canary.text)}-character text"
            )
        if canary.text[start:end] != canary.secret:
            raise ValueError(
                f"canary {index}: the text at secret_span {list(span)} is {canary.text[start:end]!r}, not its secret "
                f"{canary.secret!r}; the canary file was edited. Canaries must be exactly those used in training: "
                "restore the original file"
            )


def check_rows(data: list) -> None:
    """Raise ``TypeError``/``ValueError`` naming the rows of ``data`` unlike its first row."""
    if not data:
        return
    first = data[0]
    if isinstance(first, dict):
        fields = set(first)
        bad = [i for i, row in enumerate(data) if not isinstance(row, dict) or set(row) != fields]
        what = f"dicts with the fields {sorted(fields)} of row 0"
    else:
        kind = str if isinstance(first, str) else (list, tuple) if isinstance(first, (list, tuple)) else type(first)
        bad = [i for i, row in enumerate(data) if not isinstance(row, kind)]
        what = f"{type(first).__name__} like row 0"
    if bad:
        raise ValueError(
            f"{len(bad)} of {len(data)} data rows are not {what} (rows {bad[:MAX_NAMED]}"
            f"{'...' if len(bad) > MAX_NAMED else ''}: e.g. {_describe(data[bad[0]])}); canary rows are built like "
            "row 0, so every row must have its form"
        )


def check_text_field(data: list, field: str) -> None:
    """Raise ``ValueError`` naming the dict rows whose ``field`` is not text."""
    bad = [i for i, row in enumerate(data) if not isinstance(row.get(field), str)]
    if bad:
        raise ValueError(
            f"{len(bad)} of {len(data)} data rows have a {field!r} that is not text (rows {bad[:MAX_NAMED]}"
            f"{'...' if len(bad) > MAX_NAMED else ''}: e.g. {data[bad[0]].get(field)!r})"
        )


def _describe(row: Any) -> str:
    if isinstance(row, dict):
        return f"a dict with fields {sorted(row)}"
    return f"a {type(row).__name__}"
