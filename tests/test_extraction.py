"""Greedy secret extraction: decoding, comparison, intervals, audit mode, and a real tiny-model run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mia_guard import CanarySet
from mia_guard.analyses.extraction import ExtractionResult, extract_secrets
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.experiments.demo_assets import BYTE_VOCAB_SIZE, byte_tokenizer
from mia_guard.stats.estimate import clopper_pearson

torch.set_num_threads(1)


class Recaller:
    """A stand-in language model that has memorized given token sequences exactly.

    ``f(input_ids, attention_mask) -> logits [B, T, V]``: at each position, if the context
    so far is a prefix of a memorized sequence, the logits point at its next token;
    otherwise at a fixed token. Exactly what greedy decoding of a perfectly memorized
    secret should reproduce, and nothing else.
    """

    def __init__(self, sequences: list[list[int]], fallback: int = 3) -> None:
        self.next = {}
        for seq in sequences:
            for t in range(1, len(seq)):
                self.next[tuple(seq[:t])] = seq[t]
        self.fallback = fallback
        self.calls = 0

    def __call__(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = torch.zeros(*ids.shape, BYTE_VOCAB_SIZE)
        for b, row in enumerate(ids.tolist()):
            for t in range(len(row)):
                logits[b, t, self.next.get(tuple(row[: t + 1]), self.fallback)] = 1.0
        return logits


@pytest.fixture(scope="module")
def canaries() -> CanarySet:
    return CanarySet.generate(40, "code_credential", seed=5)


def member_sequences(canaries: CanarySet, tokenizer) -> list[list[int]]:
    encoded = encode_canaries(canaries, tokenizer)
    return [ids for ids, m in zip(encoded.input_ids, canaries.is_member) if m]


def test_memorized_secrets_come_out_exactly_and_others_do_not(canaries):
    tokenizer = byte_tokenizer()
    model = Recaller(member_sequences(canaries, tokenizer))
    result = extract_secrets(model, canaries, tokenizer, batch_size=7)
    members = canaries.is_member
    assert result.exact[members].all() and not result.exact[~members].any()
    assert np.all(result.char_match[members] == 1.0)
    hint = result.hint_tokens
    for text, canary, member in zip(result.generated, canaries, members):
        if member:
            assert text == canary.secret[hint:]
    # non-members get the fallback byte (token 3 = byte 0) everywhere: no character matches
    assert np.all(result.char_match[~members] == 0.0)
    rate = result.exact_rate(True)
    assert (rate.value, rate.low, rate.high) == (1.0, *clopper_pearson(int(members.sum()), int(members.sum())))
    figures = result.figures()
    assert figures["extraction_rate"] == 1.0 and figures["extraction_rate_nonmember"] == 0.0
    assert figures["extraction_rate_nonmember_high"] == pytest.approx(clopper_pearson(0, int((~members).sum()))[1])


def test_partial_memorization_is_counted_in_characters(canaries):
    tokenizer = byte_tokenizer()
    encoded = encode_canaries(canaries, tokenizer)
    first = int(np.flatnonzero(canaries.is_member)[0])
    ids = encoded.input_ids[first]
    cut = int(encoded.start[first]) + 8  # the model knows the prefix and the secret's first 8 characters
    result = extract_secrets(Recaller([ids[:cut]]), canaries, tokenizer, hint_tokens=0)
    secret = canaries[first].secret
    assert not result.exact[first]
    expected = sum(a == b for a, b in zip(result.generated[first], secret)) / len(secret)
    assert result.char_match[first] == pytest.approx(expected) and expected >= 8 / 12


def test_hint_auto_is_the_fewest_tokens_that_make_prompts_distinct(canaries):
    tokenizer = byte_tokenizer()
    model = Recaller([])
    bare = extract_secrets(model, canaries, tokenizer, hint_tokens=0)
    assert bare.distinct_prompts == 1  # every canary of a template has the same prefix
    assert len(set(bare.generated)) == 1  # ... so greedy decoding answers them all alike
    auto = extract_secrets(model, canaries, tokenizer)
    assert auto.distinct_prompts == len(canaries) and auto.hint_tokens >= 1
    shorter = extract_secrets(model, canaries, tokenizer, hint_tokens=auto.hint_tokens - 1)
    assert shorter.distinct_prompts < len(canaries)
    assert all(len(g) == 12 - auto.hint_tokens for g in auto.generated)


def test_cached_decoding_matches_full_recomputation(trained_lm):
    model, tokenizer, canaries = trained_lm.model, trained_lm.tokenizer, trained_lm.canaries
    cached = extract_secrets(model, canaries, tokenizer, hint_tokens=4)

    def plain(ids, attention):  # the same model as a plain callable: no key/value cache
        return model(input_ids=ids, attention_mask=attention).logits

    recomputed = extract_secrets(plain, canaries, tokenizer, hint_tokens=4)
    assert cached.generated == recomputed.generated


def test_extraction_changes_nothing(trained_lm):
    model = trained_lm.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    extract_secrets(model, trained_lm.canaries, trained_lm.tokenizer, max_new_tokens=2)
    assert torch.equal(torch.rand(3), expected_draw)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_result_round_trips_through_json(canaries):
    tokenizer = byte_tokenizer()
    result = extract_secrets(Recaller(member_sequences(canaries, tokenizer)), canaries, tokenizer)
    back = ExtractionResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert np.array_equal(back.exact, result.exact) and back.generated == result.generated
    assert back.figures() == result.figures()
    with pytest.raises(ValueError, match="not an ExtractionResult"):
        ExtractionResult.from_dict({"exact": []})


def test_token_canaries_compare_tokens():
    sequences = [[5, 6, 7, 8, 9], [5, 6, 10, 11, 12], [5, 20, 21, 22, 23], [5, 30, 31, 32, 33]]
    canaries = CanarySet.from_token_ids(sequences, seed=0).with_membership(np.array([True, False, True, False]))
    result = extract_secrets(Recaller([sequences[0], sequences[2]]), canaries, hint_tokens=1)
    assert result.exact.tolist() == [True, False, True, False]
    assert result.generated[0] == "7 8 9"


def test_bad_arguments_are_refused(canaries):
    tokenizer, model = byte_tokenizer(), Recaller([])
    with pytest.raises(ValueError, match="hint_tokens must be in"):
        extract_secrets(model, canaries, tokenizer, hint_tokens=12)
    with pytest.raises(ValueError, match="hint_tokens must be an int"):
        extract_secrets(model, canaries, tokenizer, hint_tokens="some")
    with pytest.raises(ValueError, match="max_new_tokens"):
        extract_secrets(model, canaries, tokenizer, max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        extract_secrets(model, canaries, tokenizer, batch_size=0)


def test_context_limit_is_checked(trained_lm):
    with pytest.raises(ValueError, match="model's context is 128"):
        extract_secrets(trained_lm.model, trained_lm.canaries, trained_lm.tokenizer, max_new_tokens=200)


# ------------------------------------------------------------------ a real run: more repetitions, more leakage

REPETITIONS = (1, 8, 64)
GROUP = 24


@pytest.fixture(scope="module")
def repetition_run():
    """One tiny GPT-2 trained 200 steps with three canary groups inserted 1, 8 and 64 times."""
    from lm_training import train_lm

    from mia_guard.experiments.demo_assets import stdlib_corpus, tiny_gpt2

    tokenizer = byte_tokenizer()
    groups = [CanarySet.generate(GROUP, "code_credential", seed=10 + i) for i in range(len(REPETITIONS))]
    texts = stdlib_corpus(max_chars=500 * 120)
    for group, repetitions in zip(groups, REPETITIONS):
        texts = group.insert_into(texts, repetitions=repetitions)
    model = train_lm(tiny_gpt2(seed=0), texts, tokenizer, steps=200)
    combined = CanarySet(
        [c for g in groups for c in g], np.concatenate([g.is_member for g in groups]),
        kind="templated", seed=0, split="coin", template=groups[0].template,
    )
    return model, tokenizer, combined, np.repeat(REPETITIONS, GROUP)


def test_exposure_and_extraction_rise_with_repetitions(repetition_run):
    from mia_guard import Auditor

    model, tokenizer, canaries, repetitions = repetition_run
    members = canaries.is_member
    auditor = Auditor(canaries, tokenizer, attacks=("loss",), reference="none", analyses=["privacy"])
    privacy = auditor.audit(model, step=200).extras["privacy"]
    exposures = np.array(privacy["exposure"]["exposures"])  # inserted canaries, in canary order
    mean_exposure = [exposures[repetitions[members] == r].mean() for r in REPETITIONS]

    extraction = extract_secrets(model, canaries, tokenizer)
    rates, chars = [], []
    for r in REPETITIONS:
        group = extraction.subset(repetitions == r)
        rates.append(group.exact_rate())
        chars.append(group.char_rate())
    print("exposure", mean_exposure, "extraction", [str(e) for e in rates], "chars", [str(c) for c in chars])

    assert mean_exposure[0] < mean_exposure[1] < mean_exposure[2]
    assert rates[2].low > rates[0].high  # 64 insertions: secrets come out; 1 insertion: they do not
    assert chars[2].low > chars[0].high
    control = extraction.char_rate(members=False)
    assert chars[2].low > control.high  # non-inserted secrets are not reproduced
