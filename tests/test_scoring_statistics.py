"""logit_statistics against an independent float64 computation, at a real vocabulary size and at the extremes."""

import pytest
import torch

from mia_guard.scoring.statistics import StatisticsWorkspace, logit_statistics

VOCAB = 49152


def float64_statistics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every statistic from a float64 log-softmax, written out from the definitions."""
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    index = targets.unsqueeze(1)
    target_logp = logp.gather(1, index).squeeze(1)
    finite = torch.isfinite(logp)
    plogp = torch.where(finite, p * logp, 0.0)
    entropy = -plogp.sum(-1)
    spread = torch.where(finite, p * (logp + entropy.unsqueeze(1)) ** 2, 0.0).sum(-1)
    others = logp.scatter(1, index, float("-inf"))
    log_rest = torch.logsumexp(others, -1)  # log(1 - p_target), computed over the other tokens
    return {
        "nll": -target_logp,
        "confidence": target_logp - log_rest,
        "entropy": entropy,
        "logp_std": spread.sqrt(),
        "top1": (logits.gather(1, index).squeeze(1) >= logits.amax(-1)).double(),
    }


def compute(logits: torch.Tensor, targets: torch.Tensor, rows: int) -> dict[str, torch.Tensor]:
    workspace = StatisticsWorkspace(rows, logits.shape[1], logits.device)
    return logit_statistics(logits.clone(), targets, workspace)


def assert_close(got: dict, expected: dict, atol: float) -> None:
    for name, value in expected.items():
        error = (got[name].double() - value).abs().max().item()
        assert error <= atol, f"{name}: max error {error:.2e} > {atol:.0e}"


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_matches_float64_at_real_vocabulary(rows):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(40, VOCAB, generator=generator) * 4 + 10  # offset: the shift must not matter
    targets = torch.randint(0, VOCAB, (40,), generator=generator)
    targets[:10] = logits[:10].argmax(-1)  # some top-1 targets, some not
    logits[10:20, :] *= 0.01  # nearly flat distributions: entropy near log V
    assert_close(compute(logits, targets, rows), float64_statistics(logits, targets), atol=1e-5)


def test_peaked_distributions_stay_exact():
    """Targets far above or far below the rest, and tails far below exp's range."""
    logits = torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 4, 5])
    logits[0, 0] = 30.0  # p(target) -> 1: log(1-p) by the direct sum of the other tokens
    logits[1, 1] = 90.0  # the others are ~90 nats down: exact log-sum-exp over them
    logits[2, 2] = -150.0  # target ~150 nats below the top: nll ~150, weight below exp2's floor
    logits[3, :100] = 25.0  # a hundred-way tie far above a long tail
    logits[3, 3] = 25.0
    logits[4, 5:] = -300.0  # tail far below 2**-126 relative to the top tokens
    logits[5, 6:] = -1e30  # effectively masked tokens
    got = compute(logits, targets, 2)
    assert_close(got, float64_statistics(logits, targets), atol=1e-5)
    assert torch.isfinite(torch.stack(list(got.values()))).all()


def test_results_do_not_depend_on_block_rows():
    logits = torch.randn(17, 1000, generator=torch.Generator().manual_seed(2)) * 3
    targets = torch.randint(0, 1000, (17,), generator=torch.Generator().manual_seed(3))
    one, many = compute(logits, targets, 1), compute(logits, targets, 17)
    for name in one:
        assert torch.equal(one[name], many[name]), name


def test_refuses_logits_it_would_round():
    workspace = StatisticsWorkspace(1, 4, torch.device("cpu"))
    with pytest.raises(TypeError, match="float32 logits"):
        logit_statistics(torch.zeros(2, 4, dtype=torch.float64), torch.tensor([0, 1]), workspace)
