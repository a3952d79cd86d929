"""Non-member text canaries that are near copies of member canaries.

In-distribution canaries are often cut from neighbouring parts of the same documents
(consecutive chunks of one source file, paragraphs of one page). A non-member that
repeats most of a member's text is learnt along with it: a fine-tuned model generalizes
to the copy and scores it like a member. Such a non-member is a poor negative: it
becomes one of the highest-scoring non-members and lowers every attack's TPR at low FPR
(docs/real_model.md, "Near-duplicate text canaries").

:func:`near_copies` measures, for each non-member, the share of its ``n_chars``-character
substrings that occur in some member's text. It finds copies and shared boilerplate,
not texts that share a pattern with other names in it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Length of the compared substrings, in characters.
SUBSTRING_CHARS = 20
#: A non-member with at least this share of its substrings in member texts is a near copy.
NEAR_COPY_SHARE = 0.5


@dataclass(frozen=True)
class NearCopy:
    """A non-member canary most of whose text occurs in member canaries.

    Attributes:
        non_member: index of the non-member canary.
        member: index of the member canary that shares the most substrings with it.
        share: share of the non-member's substrings that occur in some member, in ``[0, 1]``.
    """

    non_member: int
    member: int
    share: float


def _substrings(text: str, n_chars: int) -> set[int]:
    """Hashes of the distinct ``n_chars``-character substrings of ``text`` (the whole text if shorter)."""
    if len(text) <= n_chars:
        return {hash(text)}
    return {hash(text[i : i + n_chars]) for i in range(len(text) - n_chars + 1)}


def near_copies(
    texts: Sequence[str],
    is_member: Sequence[bool],
    *,
    n_chars: int = SUBSTRING_CHARS,
    share: float = NEAR_COPY_SHARE,
) -> list[NearCopy]:
    """Non-members at least ``share`` of whose ``n_chars``-character substrings occur in members.

    Args:
        texts: ``[N]`` canary texts as scored.
        is_member: ``[N]`` bool, ``True`` = inserted into training.
        n_chars: substring length (characters).
        share: threshold in ``(0, 1]``.

    Returns:
        The near copies, largest share first.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    if n_chars < 1:
        raise ValueError(f"n_chars must be at least 1, got {n_chars}")
    members = np.asarray(is_member, dtype=bool)
    if len(members) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(members)} membership labels")
    owner: dict[int, int] = {}  # substring hash -> the first member holding it
    for index in np.flatnonzero(members):
        for key in _substrings(texts[index], n_chars):
            owner.setdefault(key, int(index))
    found = []
    for index in np.flatnonzero(~members):
        substrings = _substrings(texts[index], n_chars)
        holders = Counter(owner[key] for key in substrings if key in owner)
        covered = sum(holders.values()) / len(substrings)
        if holders and covered >= share:
            found.append(NearCopy(int(index), holders.most_common(1)[0][0], covered))
    return sorted(found, key=lambda copy: -copy.share)
