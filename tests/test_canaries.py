"""CanarySet: generation, seeded splits, files with content hashes, clear errors."""

import json

import numpy as np
import pytest

from mia_guard import CanarySet, CanaryTemplate
from mia_guard.canaries.templates import BUILTIN_TEMPLATES


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_generate_builtin_templates_gives_distinct_secrets_in_template(name):
    template = BUILTIN_TEMPLATES[name]
    canaries = CanarySet.generate(200, template=name, seed=3)
    secrets = [c.secret for c in canaries]
    assert len(set(secrets)) == 200
    for c in canaries:
        assert c.text == template.prefix + c.secret + template.suffix
        assert c.text[slice(*c.secret_span)] == c.secret
    assert canaries.secret_space_size == len(template.alphabet) ** template.secret_length


def test_same_seed_same_canaries_and_split_other_seed_differs():
    a, b = CanarySet.generate(64, seed=1), CanarySet.generate(64, seed=1)
    c = CanarySet.generate(64, seed=2)
    assert a.texts == b.texts and np.array_equal(a.is_member, b.is_member)
    assert a.content_hash == b.content_hash != c.content_hash
    assert a.texts != c.texts


def test_coin_split_is_independent_fair_coins_and_half_split_is_exact():
    coin = CanarySet.generate(4000, template="english_sentence", seed=0)
    share = coin.is_member.mean()
    assert 0.46 < share < 0.54 and coin.is_member.sum() != 2000  # coins, not an exact half (with this seed)
    half = CanarySet.generate(101, seed=0, split="half")
    assert half.is_member.sum() == 50


def test_custom_template_and_word_alphabet():
    template = CanaryTemplate("door", "door code: ", " end", alphabet=("red", "blue", "green"), secret_length=3,
                              separator="-")
    canaries = CanarySet.generate(5, template=template, seed=0)
    assert all(c.secret.count("-") == 2 for c in canaries)
    assert canaries.template.secret_space_bits == pytest.approx(3 * np.log2(3))


def test_bad_generation_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown canary template 'nope'"):
        CanarySet.generate(4, template="nope")
    tiny = CanaryTemplate("tiny", "", "", alphabet=("a", "b"), secret_length=2)
    with pytest.raises(ValueError, match="do not fit"):
        CanarySet.generate(10, template=tiny)
    with pytest.raises(ValueError, match="at least 2 symbols"):
        CanaryTemplate("x", "", "", alphabet=("a",), secret_length=3)
    with pytest.raises(ValueError, match="empty"):
        CanarySet.from_texts(["fine", ""])
    with pytest.raises(ValueError, match="duplicates"):
        CanarySet.from_texts(["same", "same"])
    with pytest.raises(ValueError, match="at least 2 are needed"):
        CanarySet.from_token_ids([[1, 2, 3], [4]])


def test_save_load_roundtrip_and_refuses_edited_or_corrupt_files(tmp_path):
    canaries = CanarySet.generate(16, template="pin_sentence", seed=5)
    path = canaries.save(tmp_path / "c.json")
    loaded = CanarySet.load(path)
    assert loaded.texts == canaries.texts
    assert np.array_equal(loaded.is_member, canaries.is_member)
    assert loaded.content_hash == canaries.content_hash

    data = json.loads(path.read_text())
    data["is_member"][0] = not data["is_member"][0]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="edited or corrupted"):
        CanarySet.load(path)
    path.write_text(path.read_text()[:50])
    with pytest.raises(ValueError, match="not valid JSON"):
        CanarySet.load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CanarySet.load(tmp_path / "missing.json")


def test_token_canaries_roundtrip(tmp_path):
    canaries = CanarySet.from_token_ids([[5, 6, 7], [8, 9, 10, 11]], seed=0)
    loaded = CanarySet.load(canaries.save(tmp_path / "t.json"))
    assert [c.token_ids for c in loaded] == [(5, 6, 7), (8, 9, 10, 11)]
    assert loaded.texts is None
