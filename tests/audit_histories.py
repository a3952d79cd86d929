"""Real AuditHistory objects for report and gate tests: the Auditor run on hand-made TokenStats.

Members' per-token NLL is lowered by ``shift`` nats (a "leaky" model); ``shift=0`` gives
members and non-members the same distribution (a "clean" model). 400 canaries keep the
AUC intervals about ±0.06 wide.
"""

from __future__ import annotations

import torch

from mia_guard import Auditor, CanarySet, TokenStats
from mia_guard.experiments.demo_assets import byte_tokenizer

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
N_CANARIES = 400
POSITIONS = 12


def synthetic_stats(canaries: CanarySet, shift: float, seed: int, nan_rows: tuple[int, ...] = ()) -> TokenStats:
    """TokenStats ``[N, POSITIONS]`` with members' NLL lowered by ``shift``; ``nan_rows`` get NaN NLL."""
    g = torch.Generator().manual_seed(seed)
    n = len(canaries)
    nll = torch.rand(n, POSITIONS, generator=g) * 2.0 + 0.5
    nll[torch.tensor(canaries.is_member.copy())] -= shift
    nll = nll.clamp(min=0.01)
    for row in nan_rows:
        nll[row, 0] = float("nan")
    p = torch.exp(-nll).clamp(max=0.999)
    return TokenStats(
        nll=nll,
        confidence=torch.log(p) - torch.log1p(-p),
        entropy=torch.rand(n, POSITIONS, generator=g) + 1.0,
        logp_std=torch.rand(n, POSITIONS, generator=g) + 0.5,
        top1=(torch.rand(n, POSITIONS, generator=g) < 0.3).float(),
        mask=torch.ones(n, POSITIONS, dtype=torch.bool),
    )


def audited(shifts: dict[int, float], *, n: int = N_CANARIES, seed: int = 0, nan_rows: tuple[int, ...] = ()) -> Auditor:
    """An Auditor whose history holds one audit per ``step -> shift`` (in step order)."""
    canaries = CanarySet.generate(n, "code_credential", seed=seed)
    auditor = Auditor(canaries, byte_tokenizer(), attacks=ATTACKS, reference="none", seed=seed)
    for step, shift in sorted(shifts.items()):
        auditor.evaluate(synthetic_stats(canaries, shift, seed=step + 1, nan_rows=nan_rows), step)
    return auditor
