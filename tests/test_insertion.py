"""insert_into: members exactly r times, non-members never, every container type."""

from collections import Counter

import numpy as np
import pytest
import torch

from mia_guard import CanarySet


@pytest.fixture
def canaries():
    return CanarySet.generate(20, template="code_credential", seed=0)


def _count(items, canaries, key=lambda x: x):
    counts = Counter(key(x) for x in items)
    return [counts[c.text] for c in canaries]


def test_list_of_strings(canaries):
    data = [f"line {i}" for i in range(100)]
    out = canaries.insert_into(data, repetitions=3, seed=1)
    counts = np.array(_count(out, canaries))
    assert np.all(counts[canaries.is_member] == 3) and np.all(counts[~canaries.is_member] == 0)
    assert [x for x in out if x.startswith("line")] == data  # original order kept
    assert len(out) == 100 + 3 * canaries.is_member.sum()


def test_positions_are_random_and_seeded(canaries):
    data = [f"line {i}" for i in range(1000)]
    a = canaries.insert_into(data, repetitions=2, seed=1)
    b = canaries.insert_into(data, repetitions=2, seed=1)
    c = canaries.insert_into(data, repetitions=2, seed=2)
    assert a == b and a != c
    positions = [i for i, x in enumerate(a) if not x.startswith("line")]
    assert min(positions) < 200 and max(positions) > 800  # spread over the data, not appended


def test_dicts_tokens_and_hf_dataset(canaries):
    from mia_guard.experiments.demo_assets import byte_tokenizer

    tok = byte_tokenizer()
    rows = [{"text": f"row {i}"} for i in range(30)]
    out = canaries.insert_into(rows, repetitions=2)
    assert _count(out, canaries, key=lambda r: r["text"]) == [2 * m for m in canaries.is_member]

    token_rows = [{"input_ids": [3, 4, 5], "labels": [3, 4, 5]} for _ in range(10)]
    out = canaries.insert_into(token_rows, repetitions=1, tokenizer=tok)
    inserted = [r for r in out if r["input_ids"] != [3, 4, 5]]
    assert len(inserted) == canaries.is_member.sum()
    assert all(r["labels"] == r["input_ids"] for r in inserted)
    assert tok.decode(inserted[0]["input_ids"]) in canaries.texts

    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(50)]})
    out = canaries.insert_into(ds, repetitions=4)
    assert isinstance(out, datasets.Dataset)
    assert _count(out["text"], canaries) == [4 * m for m in canaries.is_member]


def test_torch_dataset_of_token_tensors():
    canaries = CanarySet.from_token_ids([[1, 2, 3, i] for i in range(10)], seed=0)

    class Tensors(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return torch.tensor([9, 9, 9, 9])

    out = canaries.insert_into(Tensors(), repetitions=2)
    items = [tuple(out[i].tolist()) for i in range(len(out))]
    counts = Counter(items)
    for c, member in zip(canaries, canaries.is_member):
        assert counts[c.token_ids] == (2 if member else 0)


def test_warns_when_canary_already_in_data(canaries):
    data = ["x", canaries[0].text, "y"]
    with pytest.warns(UserWarning, match="already occur"):
        canaries.insert_into(data, repetitions=1)


def test_bad_insertion_inputs(canaries):
    with pytest.raises(ValueError, match="positive integer"):
        canaries.insert_into(["a"], repetitions=0)
    with pytest.raises(ValueError, match="empty data"):
        canaries.insert_into([], repetitions=1)
    with pytest.raises(ValueError, match="needs tokenizer"):
        canaries.insert_into([[1, 2, 3]], repetitions=1)
    with pytest.raises(TypeError, match="cannot insert canaries into"):
        canaries.insert_into({"a": 1}, repetitions=1)
    with pytest.raises(ValueError, match="besides 'text'"):
        canaries.insert_into([{"text": "a", "id": 1}], repetitions=1)
