"""Image canaries: quantization round trips, token scoring without a tokenizer, image figures, the example."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mia_guard import Auditor, CanarySet, TokenStats
from mia_guard.analyses.images import image_figures
from mia_guard.canaries.images import (
    ImageVocab,
    dequantize_images,
    images_to_tokens,
    quantize_images,
    tokens_to_images,
)

torch.set_num_threads(1)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "image_generator.py"


def digits(n: int = 40) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[:n]


# ---------------------------------------------------------------------------- quantization
def test_quantize_tokens_images_round_trip_on_digits():
    images = digits()
    levels = quantize_images(images, 16, (0, 16))
    assert levels.shape == images.shape and levels.min() >= 0 and levels.max() == 15
    tokens = images_to_tokens(images, 16, (0, 16))
    assert all(len(seq) == 65 and seq[0] == 16 for seq in tokens)  # BOS then 64 pixels
    assert tokens[0][1:9] == levels[0, 0].tolist()  # raster order: first row first
    np.testing.assert_array_equal(tokens_to_images(tokens, (8, 8)), levels)
    values = tokens_to_images(tokens, (8, 8), value_range=(0, 16))
    assert np.abs(values - images).max() <= 0.5 + 1e-12  # within half a bin (bin width 1)
    np.testing.assert_array_equal(quantize_images(values, 16, (0, 16)), levels)


def test_quantization_bins_uint8_default_and_channels_interleaved():
    rgb = np.array([[[[0, 15, 16], [127, 128, 255]]]], dtype=np.uint8)  # [1, 1, 2, 3]
    np.testing.assert_array_equal(quantize_images(rgb, 16), [[[[0, 0, 1], [7, 8, 15]]]])
    assert images_to_tokens(rgb, 16, bos=False) == [[0, 0, 1, 7, 8, 15]]
    np.testing.assert_allclose(dequantize_images(np.array([0, 15]), 16, (0, 1)), [1 / 32, 31 / 32])
    assert ImageVocab(16).vocab_size == 17 and ImageVocab(16, bos=False).vocab_size == 16


def test_quantization_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"value_range=\(low, high\)"):
        quantize_images(digits(2))  # 0..16 floats: neither uint8 nor [0, 1]
    with pytest.raises(ValueError, match="outside value_range"):
        quantize_images(digits(2), 16, (0, 10))
    with pytest.raises(ValueError, match="levels must be"):
        quantize_images(digits(2), 1, (0, 16))
    with pytest.raises(ValueError, match="BOS"):
        tokens_to_images([[0] * 64], (8, 8))
    with pytest.raises(ValueError, match="needs 64"):
        tokens_to_images([[16] + [0] * 10], (8, 8))


def test_from_images_makes_token_canaries_and_rejects_duplicates():
    canaries = CanarySet.from_images(digits(), 16, seed=3, value_range=(0, 16))
    assert canaries.kind == "tokens" and canaries.texts is None and len(canaries) == 40
    assert canaries.is_member.any() and not canaries.is_member.all()
    assert all(c.token_ids[0] == 16 and max(c.token_ids) <= 16 for c in canaries)
    again = CanarySet.from_images(digits(), 16, seed=3, value_range=(0, 16))
    np.testing.assert_array_equal(again.is_member, canaries.is_member)
    twice = np.concatenate([digits(3), digits(3)[:1]])
    with pytest.raises(ValueError, match="images 0 and 3 quantize to the same tokens"):
        CanarySet.from_images(twice, value_range=(0, 16))


# ---------------------------------------------------------------------------- scoring and figures
def test_image_canaries_score_without_tokenizer_every_pixel_scored():
    """score_tokens on image tokens: no tokenizer, BOS unscored, each of the 64 pixels scored exactly."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=17, n_positions=65, n_layer=1, n_embd=32, n_head=2)).eval()
    canaries = CanarySet.from_images(digits(12), 16, value_range=(0, 16))
    auditor = Auditor(canaries, attacks=("loss",), analyses=("image",), n_folds=2)
    result = auditor.audit(model, step=0)
    stats = result.stats
    assert stats.mask.shape == (12, 64) and bool(stats.mask.all())
    ids = torch.tensor([canaries[0].token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    expected = -logp.gather(1, ids[0, 1:, None]).squeeze(1)
    np.testing.assert_allclose(stats.nll[0].double().numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    bpd = stats.masked_mean("nll") / math.log(2)
    figures = result.extras["image"]
    assert figures["bits_per_dim"]["members"]["value"] == pytest.approx(bpd[canaries.is_member].mean())


def _stats(nll: np.ndarray) -> TokenStats:
    t = torch.tensor(nll, dtype=torch.float32)
    zeros = torch.zeros_like(t)
    mask = torch.ones(t.shape, dtype=torch.bool)
    return TokenStats(nll=t, confidence=zeros, entropy=zeros, logp_std=zeros, top1=zeros, mask=mask)


def test_image_figures_bits_per_dim_gap_and_pixel_map():
    rng = np.random.default_rng(0)
    is_member = np.arange(400) % 2 == 0
    nll = rng.normal(1.5, 0.3, (400, 64)).clip(0.01)
    nll[is_member] -= 0.2  # members: 0.2 nats = 0.289 bits per pixel lower
    nll[:, 10] = np.where(is_member, 0.1, 2.0)  # one pixel position memorized
    figures = image_figures(_stats(nll), is_member)
    bpd = figures["bits_per_dim"]
    gap = bpd["gap"]
    true_gap = (nll[~is_member].mean() - nll[is_member].mean()) / math.log(2)
    assert gap["value"] == pytest.approx(true_gap, rel=1e-5)
    assert gap["low"] < gap["value"] < gap["high"] and gap["low"] > 0
    assert bpd["members"]["value"] < bpd["non_members"]["value"]
    per_image = figures["bits_per_image"]["members"]["value"]
    assert per_image == pytest.approx(nll[is_member].sum(axis=1).mean() / math.log(2), rel=1e-5)
    member_map, other_map = (np.array(figures["position_bits"][g]) for g in ("members", "non_members"))
    assert member_map.shape == (64,)
    assert member_map[10] == pytest.approx(0.1 / math.log(2), rel=1e-5)
    assert other_map[10] == pytest.approx(2.0 / math.log(2), rel=1e-5)
    json.dumps(figures)  # JSON-able as stored in AuditResult.extras
    # no membership signal: the gap interval covers 0
    clean = image_figures(_stats(rng.normal(1.5, 0.3, (400, 64))), is_member)["bits_per_dim"]["gap"]
    assert clean["low"] < 0 < clean["high"]


# ---------------------------------------------------------------------------- the example
def test_image_generator_example_quick_run_writes_its_outputs(tmp_path):
    spec = importlib.util.spec_from_file_location("image_generator_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--quick", "--out", str(tmp_path)])
    for name in ("leakage_plot", "figures", "samples", "json", "markdown", "leakage"):
        path = Path(out["paths"][name])
        assert path.exists() and path.stat().st_size > 0, name
    audits = out["audits"]
    assert [a["step"] for a in audits] == [0, 20, 40]
    assert "trajectory_rnn" not in audits[0]["attacks"]  # needs an earlier audit
    assert {"trajectory_logreg", "trajectory_rnn"} <= set(audits[1]["attacks"])
    first_bpd = audits[0]["image"]["bits_per_dim"]["members"]["value"]
    last_bpd = audits[-1]["image"]["bits_per_dim"]["members"]["value"]
    assert last_bpd < first_bpd - 0.5  # the model learned to draw digits
    saved = json.loads((tmp_path / "image_leakage.json").read_text())
    assert len(saved["audits"]) == 3
