"""Near-copy non-member text canaries: the measured share, and the warning from_texts gives."""

import string
import warnings

import numpy as np
import pytest

from mia_guard import CanarySet
from mia_guard.canaries.near_copies import near_copies


def random_texts(n, length, seed):
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase + " "))
    return ["".join(rng.choice(letters, length)) for _ in range(n)]


def test_share_is_the_fraction_of_substrings_found_in_members_computed_directly():
    base = random_texts(12, 80, seed=0)
    # non-members built from pieces of members and fresh text, so shares spread over (0, 1)
    texts = base[:6] + [base[i][: 10 * (i + 2)] + fresh for i, fresh in enumerate(random_texts(6, 40, seed=1))]
    is_member = np.array([True] * 6 + [False] * 6)
    found = {c.non_member: c for c in near_copies(texts, is_member, n_chars=8, share=1e-9)}
    for j in range(6, 12):
        grams = {texts[j][i : i + 8] for i in range(len(texts[j]) - 7)}
        in_members = {g for g in grams if any(g in texts[i] for i in range(6))}
        assert found[j].share == pytest.approx(len(in_members) / len(grams))
        assert found[j].member == j - 6  # the member it was cut from shares the most
    shares = [c.share for c in near_copies(texts, is_member, n_chars=8, share=1e-9)]
    assert shares == sorted(shares, reverse=True) and 0.0 < min(shares) < max(shares) < 1.0


def test_from_texts_warns_and_names_non_members_that_copy_a_member():
    body = "    if self.closed:\n        raise ValueError('I/O operation on a closed file')\n    return self._read()\n"
    texts = [f"def read_{i}(self):\n" + body for i in range(40)]  # consecutive chunks of repetitive code
    with pytest.warns(UserWarning, match=r"non-member canaries are near copies of member canaries") as caught:
        canaries = CanarySet.from_texts(texts, seed=0, split="half")
    message = str(caught[0].message)
    copies = near_copies(canaries.texts, canaries.is_member)
    assert message.startswith(f"{len(copies)} of 20 non-member canaries") and len(copies) == 20
    first = copies[0]
    assert not canaries.is_member[first.non_member] and canaries.is_member[first.member]
    assert f"{first.non_member} ~ {first.member}" in message


def test_distinct_texts_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CanarySet.from_texts(random_texts(64, 120, seed=2), seed=0, split="half")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="share must lie in"):
        near_copies(["a", "b"], [True, False], share=0.0)
    with pytest.raises(ValueError, match="3 texts but 2 membership labels"):
        near_copies(["a", "b", "c"], [True, False])
