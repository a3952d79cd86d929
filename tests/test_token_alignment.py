"""Token-aligned canaries: T-token secrets under a BPE tokenizer, token windows, tokenizer identity in files."""

import json

import numpy as np
import pytest

from mia_guard import CanarySet, CanaryTemplate
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.canaries.templates import BUILTIN_TEMPLATES
from mia_guard.canaries.token_alignment import TokenizerIdentity, secret_token_ids
from mia_guard.experiments.demo_assets import byte_tokenizer, stdlib_corpus

from bpe_tokenizer import bpe_tokenizer

KEYWORDS = CanaryTemplate("keywords", "# the magic words are: ", "\n",
                          alphabet=("return", "import", "class", "while", "for", "def", "if", "else", "self", "None"),
                          secret_length=5, separator=" ")


def test_bpe_secrets_vary_in_length_when_drawn_by_character_but_not_when_token_aligned():
    tok = bpe_tokenizer()
    template = BUILTIN_TEMPLATES["code_credential"]
    rng = np.random.default_rng(0)
    by_char = {len(secret_token_ids(template, template.sample_secret(rng), tok)) for _ in range(50)}
    assert len(by_char) > 2  # the problem: column j means different tokens in different canaries

    canaries = CanarySet.generate(200, "code_credential", seed=4, tokenizer=tok)
    encoded = encode_canaries(canaries, tok)
    assert canaries.alignment.mode == "token_space" and canaries.alignment.num_tokens == 12
    assert set(encoded.num_scored.tolist()) == {12}
    for canary, ids, start in zip(canaries, encoded.input_ids, encoded.start):
        assert canary.text == template.render(canary.secret)
        assert canary.text[slice(*canary.secret_span)] == canary.secret
        assert tok.decode(ids[start : start + 12]) == canary.secret  # the scored tokens are exactly the secret
    assert len({c.secret for c in canaries}) == 200
    assert 0 < canaries.secret_space_bits <= 12 * np.log2(canaries.alignment.candidates)
    again = CanarySet.generate(200, "code_credential", seed=4, tokenizer=tok)
    assert again.texts == canaries.texts and again.content_hash == canaries.content_hash


def test_word_template_and_explicit_token_count():
    tok = bpe_tokenizer()
    canaries = CanarySet.generate(100, KEYWORDS, seed=1, tokenizer=tok, secret_tokens=3)
    assert canaries.alignment.num_tokens == 3
    assert set(encode_canaries(canaries, tok).num_scored.tolist()) == {3}
    assert all(len(c.secret.split(" ")) == 3 for c in canaries)


def test_byte_tokenizer_keeps_todays_canaries_and_records_the_alignment():
    plain = CanarySet.generate(64, "code_credential", seed=2)
    aligned = CanarySet.generate(64, "code_credential", seed=2, tokenizer=byte_tokenizer())
    assert aligned.texts == plain.texts and np.array_equal(aligned.is_member, plain.is_member)
    assert aligned.alignment.mode == "symbols" and aligned.alignment.num_tokens == 12
    assert aligned.secret_space_size == plain.secret_space_size
    assert plain.alignment is None


def test_text_windows_score_the_same_positions():
    tok = bpe_tokenizer()
    texts = stdlib_corpus(max_chars=20_000, chunk_chars=200)[:40]
    canaries = CanarySet.from_texts(texts, seed=0, tokenizer=tok, window_tokens=16)
    encoded = encode_canaries(canaries, tok)
    assert set(encoded.lengths.tolist()) == {16} and set(encoded.num_scored.tolist()) == {15}
    assert all(t.startswith(c) for t, c in zip(texts, canaries.texts))
    with pytest.raises(ValueError, match="canary text 1 has 1 tokens, fewer than window_tokens=16"):
        CanarySet.from_texts([texts[0], "x"], tokenizer=tok, window_tokens=16)
    with pytest.raises(ValueError, match="needs both tokenizer"):
        CanarySet.from_texts(texts, window_tokens=16)


def test_files_keep_the_tokenizer_identity_and_refuse_another_tokenizer(tmp_path):
    tok = bpe_tokenizer()
    canaries = CanarySet.generate(40, "code_credential", seed=0, tokenizer=tok)
    path = canaries.save(tmp_path / "canaries.json")
    loaded = CanarySet.load(path, tokenizer=tok)
    assert loaded.alignment == canaries.alignment and loaded.content_hash == canaries.content_hash
    assert json.loads(path.read_text())["token_alignment"]["tokenizer"]["vocab_sha256"] == TokenizerIdentity.of(
        tok).vocab_sha256
    with pytest.raises(ValueError, match="were built for tokenizer .* but got 'ByT5Tokenizer'"):
        CanarySet.load(path, tokenizer=byte_tokenizer())
    with pytest.raises(ValueError, match="would not line up"):
        encode_canaries(loaded, byte_tokenizer())  # what the Auditor does first


def test_version_1_canary_files_still_load(tmp_path):
    canaries = CanarySet.generate(20, "pin_sentence", seed=3)
    data = json.loads(canaries.save(tmp_path / "v2.json").read_text())
    assert data["version"] == 2 and "token_alignment" not in data
    (tmp_path / "v1.json").write_text(json.dumps({**data, "version": 1}))
    old = CanarySet.load(tmp_path / "v1.json", tokenizer=byte_tokenizer())
    assert old.alignment is None and old.texts == canaries.texts and old.content_hash == canaries.content_hash


def test_a_tokenizer_that_cannot_make_T_token_secrets_is_refused_before_training():
    tok = bpe_tokenizer()
    with pytest.raises(ValueError, match="has 0 vocabulary tokens made of template 'english_sentence'"):
        CanarySet.generate(50, "english_sentence", tokenizer=tok)  # no English word is one token here
    # the first word follows ":" with no space, so its token is never the " word" token drawn for it
    glued = CanaryTemplate("glued", "# words:", "\n", alphabet=KEYWORDS.alphabet, secret_length=3, separator=" ")
    with pytest.raises(ValueError, match="cannot produce 2-token secrets for template 'glued': only 0 of"):
        CanarySet.generate(20, glued, tokenizer=tok, secret_tokens=2)
    with pytest.raises(ValueError, match="secret_tokens needs the tokenizer"):
        CanarySet.generate(50, "code_credential", secret_tokens=8)
