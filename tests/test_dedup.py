"""Training-data deduplication: exact, near-duplicate, token sequences, canary repetitions."""

import json
import pydoc_data.topics
import sys

import numpy as np
import pytest
import torch
from transformers import ByT5Tokenizer

from mia_guard.canaries.canary_set import CanarySet
from mia_guard.defenses.dedup import deduplicate, normalize_text


@pytest.fixture(scope="module")
def documents():
    """Distinct stdlib help texts (one exact duplicate pair in pydoc_data removed)."""
    seen, docs = set(), []
    for text in pydoc_data.topics.topics.values():
        if 400 <= len(text) <= 3000 and text not in seen:
            seen.add(text)
            docs.append(text)
    return docs[:30]


def _edit(text, positions):
    chars = list(text)
    for p in positions:
        chars[p] = "#" if chars[p] != "#" else "%"
    return "".join(chars)


def test_exact_duplicates_after_normalisation_are_removed(documents):
    a, b = documents[0], documents[1]
    variant = "  " + a.upper().replace(" ", "\t ") + "\n"
    assert normalize_text(variant) == normalize_text(a)
    result = deduplicate([a, b, variant, a], near_threshold=None)
    assert result.kept_index == [0, 1]
    assert result.kept_texts == [a, b]
    assert [(r.index, r.duplicate_of, r.kind, r.similarity) for r in result.removed] == [
        (2, 0, "exact", 1.0),
        (3, 0, "exact", 1.0),
    ]


def test_near_duplicates_are_removed_at_the_threshold_and_distinct_texts_kept(documents):
    original = documents[2]
    near = _edit(original, [40, 200, 350])  # three characters changed: Jaccard ~ 0.9+
    far = _edit(original, list(range(0, len(original), 12)))  # every 12th character: well below 0.8
    data = documents + [near, far]
    result = deduplicate(data, near_threshold=0.8, seed=0)

    assert len(result.removed) == 1
    removal = result.removed[0]
    assert (removal.index, removal.duplicate_of, removal.kind) == (len(documents), 2, "near")
    assert 0.8 <= removal.similarity < 1.0
    assert result.kept_index == list(range(len(documents))) + [len(documents) + 1]
    assert result.kept_texts[:len(documents)] == documents  # nothing distinct was lost

    strict = deduplicate(data, near_threshold=0.97, seed=0)
    assert strict.n_near == 0 and len(strict.kept_index) == len(data)
    with pytest.raises(ValueError, match="too close to 1"):
        deduplicate(data, near_threshold=0.995)


def test_token_id_sequences_are_deduplicated_like_texts(documents):
    tok = ByT5Tokenizer(extra_ids=0)
    ids = [tok(d)["input_ids"] for d in documents[:10]]
    near = list(ids[3])
    for p in (30, 150, 260):
        near[p] = (near[p] + 1) % 259
    data = ids + [torch.tensor(ids[5]), np.array(near), tuple(ids[0])]
    result = deduplicate(data)
    by_index = {r.index: r for r in result.removed}
    assert by_index[10].kind == "exact" and by_index[10].duplicate_of == 5
    assert by_index[11].kind == "near" and by_index[11].duplicate_of == 3
    assert by_index[12].kind == "exact" and by_index[12].duplicate_of == 0
    assert result.kept_index == list(range(10))
    assert result.kept_texts[0] is data[0]


@pytest.mark.parametrize("repetitions", [2, 7])
def test_canaries_inserted_r_times_are_reduced_to_one_copy(documents, repetitions):
    canaries = CanarySet.generate(16, seed=3)
    data = canaries.insert_into(list(documents), repetitions=repetitions, seed=4)
    members = [c.text for c in canaries.members]
    assert all(data.count(m) == repetitions for m in members)

    result = deduplicate(data)
    assert all(result.kept_texts.count(m) == 1 for m in members)
    assert all(c.text not in result.kept_texts for c in canaries.non_members)
    assert [t for t in result.kept_texts if t not in members] == documents
    assert result.n_exact == len(members) * (repetitions - 1)
    assert result.n_near == 0  # distinct secrets in one template are not merged


def test_results_are_reproducible_and_serialisable(documents):
    data = documents + [_edit(documents[4], [10, 100])]
    a = deduplicate(data, seed=5)
    b = deduplicate(data, seed=5)
    assert a.to_dict() == b.to_dict()
    assert json.loads(json.dumps(a.to_dict()))["removed"][0]["kind"] == "near"
    assert a.summary().startswith(f"kept {len(documents)} of {len(documents) + 1} items; removed 0 exact and 1 near")


def test_missing_datasketch_gives_an_actionable_error(monkeypatch, documents):
    monkeypatch.setitem(sys.modules, "datasketch", None)
    with pytest.raises(ImportError, match=r"mia-guard\[dedup\]"):
        deduplicate(documents[:3])
    assert deduplicate(documents[:3] + documents[:1], near_threshold=None).n_exact == 1


def test_invalid_inputs_are_rejected():
    with pytest.raises(TypeError, match="single string"):
        deduplicate("abc")
    with pytest.raises(TypeError, match="mix"):
        deduplicate(["abc", [1, 2, 3]])
    with pytest.raises(TypeError, match="token ids"):
        deduplicate([[0.5, 1.5]])
    with pytest.raises(ValueError, match="near_threshold"):
        deduplicate(["a"], near_threshold=1.5)
    with pytest.raises(ValueError, match="ngram"):
        deduplicate(["a"], ngram=0)
    assert deduplicate([]).kept_texts == []
