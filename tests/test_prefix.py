"""Prefix sensitivity: one forward pass, figures per prefix length, same canaries in every row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mia_guard import Auditor, CanarySet
from mia_guard.audit.prefix import drop_leading_positions, prefix_markdown, prefix_sensitivity

# The fixture's canaries as plain documents: '\nAPI_SECRET_KEY = "' (19 bytes) + 12-byte secret + '"\n'.
TEMPLATE_PREFIX_BYTES = 19


@pytest.fixture(scope="module")
def documents(trained_lm) -> CanarySet:
    return CanarySet.from_texts(trained_lm.canaries.texts).with_membership(trained_lm.canaries.is_member)


def test_sliced_statistics_equal_scoring_with_the_prefix(trained_lm, documents):
    base = Auditor(documents, trained_lm.tokenizer, reference="none")
    full = base.score(trained_lm.model)
    for length in (8, TEMPLATE_PREFIX_BYTES, 30):
        auditor = Auditor(documents, trained_lm.tokenizer, reference="none", prefix_tokens=length)
        direct = auditor.score(trained_lm.model)
        sliced = drop_leading_positions(full, auditor.encoded.start - base.encoded.start)
        assert torch.equal(sliced.mask, direct.mask)
        for name in ("nll", "confidence", "entropy", "logp_std", "top1"):
            torch.testing.assert_close(sliced.field(name), direct.field(name), atol=1e-5, rtol=1e-5)


def test_prefix_sensitivity_reports_every_length(trained_lm, documents):
    result = prefix_sensitivity(
        trained_lm.model, documents, trained_lm.tokenizer, prefix_lengths=[30, 0, 8, TEMPLATE_PREFIX_BYTES]
    )
    json.dumps(result, allow_nan=False)
    assert result["prefix_lengths"] == [0, 8, TEMPLATE_PREFIX_BYTES, 30]
    assert result["dropped_canaries"] == 0 and result["n_canaries"] == len(documents)
    rows = {row["prefix_tokens"]: row for row in result["rows"]}
    # 32 scored bytes without a prefix (the first byte has no context); L bytes of context leave 33 - L
    assert [rows[L]["mean_scored_tokens"] for L in (0, 8, 19, 30)] == [32.0, 25.0, 14.0, 3.0]
    auc = {L: rows[L]["metrics"]["loss"]["auc"] for L in rows}
    # the template prefix is the same text in every canary, so scoring it changes no ranking of the loss
    assert auc[0]["value"] == pytest.approx(auc[TEMPLATE_PREFIX_BYTES]["value"])
    assert auc[TEMPLATE_PREFIX_BYTES]["low"] > 0.9
    # with 30 bytes of context only the last secret byte and the suffix are left: much less signal
    assert auc[30]["high"] < auc[TEMPLATE_PREFIX_BYTES]["low"]
    assert set(rows[0]["metrics"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}


def test_short_canaries_are_left_out_of_every_row(trained_lm):
    texts = list(trained_lm.canaries.texts[:40]) + [f"short {i}" for i in range(20)]
    is_member = np.array([True, False] * 30)
    canaries = CanarySet.from_texts(texts).with_membership(is_member)
    result = prefix_sensitivity(trained_lm.model, canaries, trained_lm.tokenizer, prefix_lengths=[0, 16],
                                attacks=["loss"], min_continuation=4)
    assert result["dropped_canaries"] == 20 and result["n_canaries"] == 40
    assert all(row["metrics"]["loss"]["n_members"] == 20 for row in result["rows"])
    text = prefix_markdown(result)
    assert "20 canaries shorter than the longest prefix" in text
    assert text.count("| 16 | 17.0 |") == 2  # the AUC and the TPR table


def test_prefix_sensitivity_refuses_templated_and_impossible_requests(trained_lm, documents):
    with pytest.raises(ValueError, match="in-distribution"):
        prefix_sensitivity(trained_lm.model, trained_lm.canaries, trained_lm.tokenizer)
    with pytest.raises(ValueError, match="no members or no non-members remain"):
        prefix_sensitivity(trained_lm.model, documents, trained_lm.tokenizer, prefix_lengths=[0, 40])
    with pytest.raises(ValueError, match="non-negative"):
        prefix_sensitivity(trained_lm.model, documents, trained_lm.tokenizer, prefix_lengths=[-1])


def test_markdown_table_lists_each_length_and_attack(trained_lm, documents):
    result = prefix_sensitivity(trained_lm.model, documents, trained_lm.tokenizer, prefix_lengths=[0, 8],
                                attacks=["loss", "min_k"], fprs=[0.1])
    text = prefix_markdown(result)
    assert "| prefix tokens | scored tokens (mean) | loss | min_k |" in text
    assert "TPR at 10% FPR" in text
    assert text.count("| 0 | 32.0 |") == 2 and text.count("| 8 | 25.0 |") == 2


def test_report_shows_prefix_sensitivity_when_given(trained_lm, documents, tmp_path):
    from mia_guard.report.files import write_report

    result = prefix_sensitivity(trained_lm.model, documents, trained_lm.tokenizer, prefix_lengths=[0, 19],
                                attacks=["loss"])
    auditor = Auditor(documents, trained_lm.tokenizer, attacks=["loss"], reference="none")
    auditor.audit(trained_lm.model, 300)
    paths = write_report(auditor.history, tmp_path, run_info={"prefix_sensitivity": result, "run": "fixture"})
    text = paths["markdown"].read_text()
    assert "## Prefix sensitivity" in text and "| 19 | 14.0 |" in text
    assert '"rows"' not in text  # not dumped as raw JSON in the run information table
    assert "| run | fixture |" in text
