"""docs/peft.md runs as written: LoRA through MIAAuditCallback, the step-0 audit is the
base model's, and the merged model's audit gives the adapted model's figures."""

from __future__ import annotations

import pytest
import torch
from markdown_blocks import ROOT, blocks, run_block

from mia_guard import Auditor
from mia_guard.experiments.demo_assets import tiny_gpt2


def test_the_peft_page_runs_and_its_claims_hold(tmp_path, monkeypatch):
    pytest.importorskip("peft")
    monkeypatch.chdir(tmp_path)
    (code,) = blocks(ROOT / "docs" / "peft.md", "python")
    ns = run_block(code, "docs/peft.md python block")
    audit, final, canaries, tokenizer = ns["audit"], ns["final"], ns["canaries"], ns["tokenizer"]
    assert audit.history.steps == [0, 5, 10]
    # step 0 = the untouched base model (LoRA's B starts at zero)
    base = Auditor(canaries, tokenizer, config=audit.config).audit(tiny_gpt2(n_layer=1, n_embd=32), step=0)
    first = audit.history.results[0]
    assert first.member_nll.value == pytest.approx(base.member_nll.value, abs=1e-6)
    assert torch.allclose(first.stats.nll, base.stats.nll, atol=1e-5)
    # training changed something, and the merged model gives the adapted model's figures
    last = audit.history.last
    assert last.member_nll.value != pytest.approx(first.member_nll.value, abs=1e-4)
    assert final.member_nll.value == pytest.approx(last.member_nll.value, abs=1e-4)
    shared = set(last.metrics) & set(final.metrics)  # trajectory attacks need the run's earlier audits
    assert {"loss", "reference"} <= shared
    for name in shared:
        assert final.metrics[name].auc.value == pytest.approx(last.metrics[name].auc.value, abs=0.02), name
