"""Insert member canaries into training data of the common container types.

Each member canary appears exactly ``repetitions`` times, at uniformly random positions;
non-members never appear; the original items keep their relative order. The returned
object has the type of the input:

====================================  =====================================================
input                                 canary item
====================================  =====================================================
``list[str]``                         the canary text
``list[Sequence[int]]``               the canary's token ids (text canaries need ``tokenizer``)
``list[dict]``                        ``{text_field: text}`` or ``{"input_ids", "attention_mask"[, "labels"]}``
``datasets.Dataset``                  a row like the dict case, cast to the dataset's features
``torch.utils.data.Dataset``          a wrapping Dataset; items like the first base item
====================================  =====================================================
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.utils.data

from .checks import check_rows, check_text_field


class Canaries(Protocol):
    """What insertion reads of a :class:`~mia_guard.canaries.canary_set.CanarySet`.

    (``CanarySet.insert_into`` calls this module, so the set is described here rather
    than imported: imports point one way, from the set to its insertion.)
    """

    kind: str
    canaries: Sequence[Any]

    @property
    def members(self) -> list[Any]: ...


def insertion_order(n_data: int, n_copies: int, rng: np.random.Generator) -> np.ndarray:
    """Index ``[n_data + n_copies]`` into ``data + copies``: copies at random slots, data in order."""
    total = n_data + n_copies
    order = np.empty(total, dtype=np.int64)
    slots = np.zeros(total, dtype=bool)
    slots[rng.choice(total, size=n_copies, replace=False)] = True
    order[~slots] = np.arange(n_data)
    order[slots] = n_data + rng.permutation(n_copies)
    return order


def insert_canaries(
    canaries: Canaries,
    data: Any,
    *,
    repetitions: int,
    seed: int,
    tokenizer: Any = None,
    text_field: str = "text",
) -> Any:
    """Return ``data`` with the members of ``canaries`` inserted ``repetitions`` times each."""
    if not isinstance(repetitions, (int, np.integer)) or repetitions < 1:
        raise ValueError(f"repetitions must be a positive integer, got {repetitions!r}")
    if not (isinstance(data, list) or _is_hf_dataset(data) or _is_torch_dataset(data)):
        raise TypeError(
            f"cannot insert canaries into {type(data).__name__}; pass a list of strings, token-id sequences or "
            "dicts, a datasets.Dataset, or a map-style torch Dataset"
        )
    if isinstance(data, list):
        check_rows(data)
    members = canaries.members
    n_copies = len(members) * repetitions
    rng = np.random.default_rng([seed, 2])
    builder = _ItemBuilder(canaries, data, tokenizer, text_field)
    copies = [builder.make(c) for c in members for _ in range(repetitions)]
    builder.warn_if_present()

    if _is_hf_dataset(data):
        import datasets

        extra = datasets.Dataset.from_list(copies).cast(data.features)
        order = insertion_order(len(data), n_copies, rng)
        return datasets.concatenate_datasets([data, extra]).select(order)
    if isinstance(data, list):
        order = insertion_order(len(data), n_copies, rng)
        combined = data + copies
        return [combined[i] for i in order]
    return CanaryInsertedDataset(data, copies, insertion_order(len(data), n_copies, rng))


class _ItemBuilder:
    """Builds a canary item that looks like the items of ``data``."""

    def __init__(self, canaries: Canaries, data: Any, tokenizer: Any, text_field: str) -> None:
        if len(data) == 0:
            raise ValueError("cannot insert canaries into empty data: the item format is unknown")
        self.canaries = canaries
        self.tokenizer = tokenizer
        self.text_field = text_field
        sample = data[0]
        self.make: Callable[[Any], Any]
        self._haystack: Callable[[], str] | None = None
        if isinstance(sample, str):
            self._require_texts("a list of strings")
            self.make = lambda c: c.text
            self._haystack = lambda: "\x00".join(data)
        elif isinstance(sample, dict):
            self._init_dict(sample, data)
        elif _is_token_sequence(sample):
            self.make = lambda c: list(self._token_ids(c))
        elif isinstance(sample, torch.Tensor) and sample.dim() == 1:
            self.make = lambda c: torch.tensor(self._token_ids(c), dtype=sample.dtype)
        else:
            raise TypeError(
                f"unsupported data item type {type(sample).__name__}; items must be strings, token-id "
                "sequences, 1-D tensors or dicts"
            )

    def _init_dict(self, sample: dict, data: Any) -> None:
        keys = set(sample)
        if self.text_field in keys:
            others = keys - {self.text_field}
            if others:
                raise ValueError(
                    f"data items have fields {sorted(others)} besides {self.text_field!r}; canary rows cannot fill them. "
                    "Insert canaries before adding other columns, or keep only the text column."
                )
            self._require_texts("text rows")
            if isinstance(data, list):
                check_text_field(data, self.text_field)
            self.make = lambda c: {self.text_field: c.text}
            self._haystack = lambda: "\x00".join(row[self.text_field] for row in data)
        elif "input_ids" in keys:
            others = keys - {"input_ids", "attention_mask", "labels"}
            if others:
                raise ValueError(f"tokenized rows have extra fields {sorted(others)} that canary rows cannot fill")

            def make(c: Any) -> dict:
                ids = list(self._token_ids(c))
                row = {"input_ids": ids}
                if "attention_mask" in keys:
                    row["attention_mask"] = [1] * len(ids)
                if "labels" in keys:
                    row["labels"] = list(ids)
                return row

            self.make = make
        else:
            raise ValueError(
                f"data rows have fields {sorted(keys)}: expected a {self.text_field!r} text field "
                "(set text_field=...) or 'input_ids'"
            )

    def _require_texts(self, what: str) -> None:
        if self.canaries.kind == "tokens":
            raise ValueError(f"token-only canaries cannot be inserted into {what}; insert them into token data")

    def _token_ids(self, canary: Any) -> tuple[int, ...]:
        if canary.token_ids is not None:
            return canary.token_ids
        if self.tokenizer is None:
            raise ValueError("inserting text canaries into token data needs tokenizer=... to encode them")
        return tuple(self.tokenizer(canary.text, add_special_tokens=False)["input_ids"])

    def warn_if_present(self) -> None:
        if self._haystack is not None:
            check_not_present(self.canaries, self._haystack(), "training data")


def check_not_present(canaries: Canaries, haystack: str, what: str) -> None:
    """Warn when canary texts already occur in ``haystack`` (the joined training data)."""
    found = [i for i, c in enumerate(canaries.canaries) if c.text is not None and c.text in haystack]
    if found:
        warnings.warn(
            f"{len(found)} canaries already occur in the {what} before insertion (first: index {found[0]}); "
            "their membership labels are wrong. Use fresh canaries (another seed or template).",
            UserWarning,
            stacklevel=3,
        )


def _is_token_sequence(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and len(item) > 0 and all(isinstance(t, (int, np.integer)) for t in item)


def _is_hf_dataset(data: Any) -> bool:
    try:
        import datasets
    except ImportError:
        return False
    return isinstance(data, datasets.Dataset)


def _is_torch_dataset(data: Any) -> bool:
    return isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__")


class CanaryInsertedDataset(torch.utils.data.Dataset):
    """A map-style Dataset: ``base`` with canary ``copies`` at the positions of ``order``."""

    def __init__(self, base: Any, copies: Sequence[Any], order: np.ndarray) -> None:
        self.base = base
        self.copies = list(copies)
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> Any:
        source = int(self.order[index])
        n_base = len(self.base)
        return self.base[source] if source < n_base else self.copies[source - n_base]
