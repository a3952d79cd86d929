"""Bad inputs get errors that name their cause: wrapped models, out-of-vocabulary canaries,
wrong model outputs, duplicate or edited canaries, uneven training rows, histories out of order."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import torch

from mia_guard import Auditor, CanarySet
from mia_guard.audit.result import AuditHistory
from mia_guard.canaries.canary_set import Canary
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.scoring.forward import score_tokens

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0).eval()
    return model, byte_tokenizer(), CanarySet.generate(16, "code_credential", seed=0)


# ------------------------------------------------------------------ wrapped models


@pytest.mark.parametrize("wrap", [torch.compile, torch.nn.DataParallel], ids=["torch.compile", "DataParallel"])
def test_wrapped_models_are_scored_like_the_model(small, wrap):
    model, tokenizer, canaries = small
    expected = score_tokens(model, canaries, tokenizer)
    got = score_tokens(wrap(model), canaries, tokenizer)
    torch.testing.assert_close(got.nll, expected.nll)
    result = Auditor(canaries, tokenizer, attacks=("loss",), reference="none").audit(wrap(model), 0)
    assert result.metrics["loss"].auc.value == pytest.approx(
        Auditor(canaries, tokenizer, attacks=("loss",), reference="none").audit(model, 0).metrics["loss"].auc.value
    )


# ------------------------------------------------------------------ what the model is given and returns


def test_token_id_beyond_the_vocabulary_names_the_canary(small):
    model = small[0]
    canaries = CanarySet.from_token_ids([[1, 2, 3, 4], [5, 6, 300, 8]])
    with pytest.raises(ValueError, match=r"canary 1 has token id 300 at position 2, but the model's vocabulary has 259"):
        score_tokens(model, canaries)


def test_callable_with_a_small_vocabulary_is_caught_before_indexing(small):
    model, tokenizer, canaries = small

    def truncated(ids, attention):  # a head over fewer tokens than the canaries use
        return model(input_ids=ids, attention_mask=attention).logits[..., :50]

    with pytest.raises(ValueError, match=r"has token id \d+ at position \d+, but the model's vocabulary has 50 tokens"):
        score_tokens(truncated, canaries, tokenizer)


def test_wrong_output_shape_says_what_was_expected(small):
    model, tokenizer, canaries = small

    def last_position_only(ids, attention):
        return model(input_ids=ids, attention_mask=attention).logits[:, -1]

    with pytest.raises(TypeError, match=r"logits of shape \[batch, tokens, vocab\] = \[16, \d+, V\].*got \(16, 259\)"):
        score_tokens(last_position_only, canaries, tokenizer)


# ------------------------------------------------------------------ canaries


def test_every_constructor_refuses_duplicates():
    canaries = CanarySet.generate(4, "code_credential", seed=0)
    twice = [canaries[0], canaries[1], canaries[0]]
    with pytest.raises(ValueError, match="canaries 0 and 2 are the same canary"):
        CanarySet(twice, np.array([True, False, False]), kind="templated", seed=0, split="custom",
                  template=canaries.template)
    with pytest.raises(ValueError, match="duplicates"):
        CanarySet.from_texts(["a b c", "d e f", "a b c"])
    with pytest.raises(ValueError, match="duplicates"):
        CanarySet.from_token_ids([[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="canaries 0 and 1 are the same canary"):
        CanarySet([Canary(text="x y"), Canary(text="x y")], np.array([True, False]), kind="texts", seed=0,
                  split="custom")


def _rewrite_with_hash(path, edit):
    """Edit a canary file and recompute its hash as a careless (or malicious) tool would."""
    data = json.loads(path.read_text())
    edit(data)
    content = {k: data[k] for k in ("kind", "seed", "split", "template", "canaries", "is_member")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    data["sha256"] = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    path.write_text(json.dumps(data))


def test_canary_file_with_moved_secret_is_refused_even_with_a_recomputed_hash(tmp_path):
    path = CanarySet.generate(8, "code_credential", seed=1).save(tmp_path / "canaries.json")

    def move_secret(data):
        data["canaries"][3]["secret_span"][0] += 1
        data["canaries"][3]["secret_span"][1] += 1

    _rewrite_with_hash(path, move_secret)
    with pytest.raises(ValueError, match=r"canary 3: the text at secret_span \[\d+, \d+\] is .* not its secret"):
        CanarySet.load(path)


def test_canary_file_with_a_duplicated_canary_is_refused(tmp_path):
    path = CanarySet.generate(8, "code_credential", seed=1).save(tmp_path / "canaries.json")
    _rewrite_with_hash(path, lambda data: data["canaries"].__setitem__(5, copy.deepcopy(data["canaries"][2])))
    with pytest.raises(ValueError, match="canaries 2 and 5 are the same canary"):
        CanarySet.load(path)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ([{"text": "a"}, {"text": "b"}, {"text": "c", "label": 1}], r"1 of 3 data rows are not dicts with the fields \['text'\]"),
        ([{"text": "a"}, "b"], r"rows \[1\]"),
        ([{"text": "a"}, {"text": None}], r"'text' that is not text \(rows \[1\]"),
        (["a", "b", 3], r"not str like row 0 \(rows \[2\]"),
    ],
)
def test_every_row_of_a_list_is_checked_on_insertion(data, fragment):
    canaries = CanarySet.generate(8, "code_credential", seed=0)
    with pytest.raises(ValueError, match=fragment):
        canaries.insert_into(data)


# ------------------------------------------------------------------ histories


def test_history_out_of_step_order_is_refused(small, tmp_path):
    model, tokenizer, canaries = small
    auditor = Auditor(canaries, tokenizer, attacks=("loss",))
    auditor.audit(model, 0)
    auditor.audit(model, 10)
    with pytest.raises(ValueError, match="the step of the last recorded audit"):
        auditor.audit(model, 10)
    data = auditor.history.to_dict()
    data["results"].reverse()
    with pytest.raises(ValueError, match=r"not in increasing step order \(step 0 follows step 10"):
        AuditHistory.from_dict(data, source="history.json")
