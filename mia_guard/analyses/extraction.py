"""Secret extraction: does greedy decoding reproduce a canary's secret from its prompt?

:func:`extract_secrets` prompts the model with each canary's context (the tokens before
its scored range, :meth:`EncodedCanaries.prompt_ids`: the template prefix for templated
canaries) plus the first ``hint_tokens`` tokens of the secret, decodes greedily, and
compares the continuation with the rest of the secret:

* **exact**: the continuation reproduces the remaining secret (text compared after
  decoding, so a different tokenization of the same text counts; token ids for
  token-only canaries);
* **character match**: the fraction of the remaining secret's characters (tokens for
  token-only canaries) reproduced at the same position.

Non-inserted canaries are the control: a model that has not memorized reproduces their
secrets only by chance, so the member rate minus the non-member rate is what training
on the canaries bought the attacker.

Why a hint. All canaries of a template share its prefix, and greedy decoding is
deterministic, so from the bare prefix every canary gets the *same* continuation: at
most one secret per template can come out, whatever the model memorized.
``hint_tokens="auto"`` (default) gives the fewest leading secret tokens that make every
canary's prompt distinct (chosen from the secrets alone, never from membership), so
each secret is asked for separately — "the attacker knows the first characters of the
key". ``hint_tokens=0`` is the literal prefix-only attack.

Auditing changes nothing: eval mode, no gradients and a forked RNG, as in scoring.
Decoding costs ``max_new_tokens`` forward steps per batch (a key/value cache is used for
Hugging Face models), so callers run it at a slower cadence than scoring. Pass the
unwrapped model (below DDP / Opacus wrappers).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..canaries.canary_set import CanarySet
from ..canaries.encoding import EncodedCanaries, encode_canaries
from ..scoring.forward import _audit_mode, _call_for_logits, _context_limit, _is_hf_model, _model_device
from ..stats.estimate import Estimate, clopper_pearson, mean_with_ci

__all__ = ["ExtractionResult", "extract_secrets"]

DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class ExtractionResult:
    """Outcome of greedy secret extraction for N canaries.

    Attributes:
        exact: bool ``[N]``, the continuation reproduced the (remaining) secret.
        char_match: float ``[N]`` in ``[0, 1]``, fraction of the remaining secret's
            characters (tokens for token-only canaries) reproduced in place.
        is_member: bool ``[N]``, ``True`` = inserted into training.
        generated: per canary, the decoded continuation (text; for token-only canaries the
            token ids joined by spaces).
        hint_tokens: secret tokens given in the prompt.
        distinct_prompts: number of distinct prompts when decoded; below N, canaries sharing a prompt
            got the same continuation.
        confidence: level of the intervals.
        decode_steps: greedy steps run in total (forward passes over a batch).
        seconds: wall time.
    """

    exact: np.ndarray
    char_match: np.ndarray
    is_member: np.ndarray
    generated: list[str]
    hint_tokens: int
    distinct_prompts: int
    confidence: float = 0.95
    decode_steps: int = 0
    seconds: float = 0.0

    def subset(self, index: Any) -> "ExtractionResult":
        """The result for some canaries (a bool mask or integer indices), e.g. one insertion group."""
        rows = np.arange(self.exact.size)[index]
        return ExtractionResult(
            exact=self.exact[rows],
            char_match=self.char_match[rows],
            is_member=self.is_member[rows],
            generated=[self.generated[i] for i in rows],
            hint_tokens=self.hint_tokens,
            distinct_prompts=self.distinct_prompts,
            confidence=self.confidence,
            decode_steps=self.decode_steps,
            seconds=self.seconds,
        )

    def exact_rate(self, members: bool = True) -> Estimate:
        """Share of member (or non-member) secrets reproduced exactly, Clopper–Pearson interval."""
        hits = self.exact[self.is_member == members]
        if hits.size == 0:
            return Estimate(math.nan, math.nan, math.nan, self.confidence, f"no {_group(members)}")
        low, high = clopper_pearson(int(hits.sum()), hits.size, self.confidence)
        return Estimate(float(hits.mean()), low, high, self.confidence)

    def char_rate(self, members: bool = True) -> Estimate:
        """Mean fraction of characters matched over member (or non-member) canaries, t interval."""
        values = self.char_match[self.is_member == members]
        if values.size == 0:
            return Estimate(math.nan, math.nan, math.nan, self.confidence, f"no {_group(members)}")
        est = mean_with_ci(values, self.confidence)
        return Estimate(est.value, max(0.0, est.low), min(1.0, est.high), est.confidence, est.note)

    def figures(self) -> dict[str, float]:
        """Flat figures for ``AuditResult.extras["privacy"]`` (``extraction_rate`` is what
        ``max_extraction_rate`` limits); NaN where a group is empty."""
        out: dict[str, float] = {}
        for name, est in (
            ("extraction_rate", self.exact_rate(True)),
            ("extraction_rate_nonmember", self.exact_rate(False)),
            ("extraction_char_rate", self.char_rate(True)),
            ("extraction_char_rate_nonmember", self.char_rate(False)),
        ):
            out[name], out[f"{name}_low"], out[f"{name}_high"] = est.value, est.low, est.high
        out["extraction_hint_tokens"] = self.hint_tokens
        return out

    def to_dict(self) -> dict:
        """JSON-able dict (per-canary lists and the rates with intervals)."""
        return {
            "exact": [bool(x) for x in self.exact],
            "char_match": [float(x) for x in self.char_match],
            "is_member": [bool(x) for x in self.is_member],
            "generated": list(self.generated),
            "hint_tokens": int(self.hint_tokens),
            "distinct_prompts": int(self.distinct_prompts),
            "confidence": float(self.confidence),
            "decode_steps": int(self.decode_steps),
            "seconds": float(self.seconds),
            "rates": {
                "member_exact": self.exact_rate(True).to_dict(),
                "nonmember_exact": self.exact_rate(False).to_dict(),
                "member_chars": self.char_rate(True).to_dict(),
                "nonmember_chars": self.char_rate(False).to_dict(),
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ExtractionResult":
        """Inverse of :meth:`to_dict` (the rates are recomputed)."""
        try:
            return cls(
                exact=np.asarray(data["exact"], dtype=bool),
                char_match=np.asarray(data["char_match"], dtype=np.float64),
                is_member=np.asarray(data["is_member"], dtype=bool),
                generated=[str(g) for g in data["generated"]],
                hint_tokens=int(data["hint_tokens"]),
                distinct_prompts=int(data["distinct_prompts"]),
                confidence=float(data["confidence"]),
                decode_steps=int(data["decode_steps"]),
                seconds=float(data["seconds"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not an ExtractionResult dict ({err!r})") from err


def _group(members: bool) -> str:
    return "inserted canaries" if members else "non-inserted canaries"


def extract_secrets(
    model: Any,
    canaries: CanarySet,
    tokenizer: Any = None,
    *,
    hint_tokens: int | str = "auto",
    max_new_tokens: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    confidence: float = 0.95,
) -> ExtractionResult:
    """Greedy-decode every canary's secret from its prompt and compare (see module docstring).

    Args:
        model: a Hugging Face causal LM or a callable ``f(input_ids, attention_mask) -> logits``.
        canaries: the canary set (membership gives the member / control groups).
        tokenizer: the training tokenizer (not needed for token-only canaries).
        hint_tokens: leading secret tokens added to the prompt: an int, or ``"auto"`` for
            the fewest that make all prompts distinct.
        max_new_tokens: tokens to generate per canary; default: the length of its
            remaining secret in tokens.
        batch_size: canaries decoded together (canaries with equal prompt lengths are
            batched, so no padding is needed).
        device: where to run; default the model's device.
        confidence: level of the intervals of the rates.
    """
    started = time.perf_counter()
    encoded = encode_canaries(canaries, tokenizer)
    hint = _resolve_hint(encoded, hint_tokens)
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompts = [encoded.input_ids[i][: encoded.start[i] + hint] for i in range(len(encoded))]
    if any(not p for p in prompts):
        raise ValueError(
            "some canaries have no tokens before their secret, so greedy decoding has no prompt; give "
            "hint_tokens >= 1 (the attacker knows the first tokens) or use templated canaries"
        )
    targets = [encoded.input_ids[i][encoded.start[i] + hint : encoded.end[i]] for i in range(len(encoded))]
    budgets = [max_new_tokens or len(t) for t in targets]
    _check_context(model, prompts, budgets)
    device = torch.device(device) if device is not None else _model_device(model)

    outputs: list[list[int]] = [[] for _ in prompts]
    steps = 0
    with _audit_mode(model, device):
        for rows in _equal_length_batches(prompts, batch_size):
            n_new = max(budgets[i] for i in rows)
            ids = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=device)
            new = _greedy(model, ids, n_new).cpu().tolist()
            for i, tokens in zip(rows, new):
                outputs[i] = tokens[: budgets[i]]
            steps += n_new

    exact, chars, shown = [], [], []
    for generated, target in zip(outputs, targets):
        e, c, s = _compare(generated, target, tokenizer if canaries.kind != "tokens" else None)
        exact.append(e)
        chars.append(c)
        shown.append(s)
    return ExtractionResult(
        exact=np.array(exact, dtype=bool),
        char_match=np.array(chars, dtype=np.float64),
        is_member=np.asarray(canaries.is_member, dtype=bool).copy(),
        generated=shown,
        hint_tokens=hint,
        distinct_prompts=len({tuple(p) for p in prompts}),
        confidence=confidence,
        decode_steps=steps,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------- prompts
def _resolve_hint(encoded: EncodedCanaries, hint_tokens: int | str) -> int:
    """The hint length: the given int, or the fewest tokens that make every prompt distinct."""
    shortest = int(encoded.num_scored.min())
    if hint_tokens == "auto":
        for hint in range(shortest):
            prompts = {tuple(ids[: start + hint]) for ids, start in zip(encoded.input_ids, encoded.start)}
            if len(prompts) == len(encoded):
                return hint
        return shortest - 1
    if isinstance(hint_tokens, bool) or not isinstance(hint_tokens, (int, np.integer)):
        raise ValueError(f"hint_tokens must be an int or 'auto', got {hint_tokens!r}")
    if not 0 <= hint_tokens < shortest:
        raise ValueError(
            f"hint_tokens must be in [0, {shortest - 1}]: the shortest secret has {shortest} tokens and at least "
            f"one must be left to extract; got {hint_tokens}"
        )
    return int(hint_tokens)


def _check_context(model: Any, prompts: list[list[int]], budgets: list[int]) -> None:
    limit = _context_limit(model)
    longest = max(len(p) + b for p, b in zip(prompts, budgets))
    if limit is not None and longest > limit:
        raise ValueError(
            f"prompt plus generated tokens reach {longest} tokens but the model's context is {limit}; "
            "lower max_new_tokens or use shorter canaries"
        )


def _equal_length_batches(prompts: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length in sorted(by_length):
        rows = by_length[length]
        for k in range(0, len(rows), batch_size):
            yield rows[k : k + batch_size]


# ---------------------------------------------------------------------------- decoding
def _greedy(model: Any, ids: torch.Tensor, n_new: int) -> torch.Tensor:
    """``n_new`` greedy tokens after ``ids [B, P]`` (no padding), ``[B, n_new]``; argmax ties go to the lowest id."""
    if _is_hf_model(model):
        cache = _cache_name(model)
        out = model(input_ids=ids, use_cache=True)
        tokens = [out.logits[:, -1].argmax(-1)]
        for _ in range(n_new - 1):
            out = model(input_ids=tokens[-1].unsqueeze(1), use_cache=True, **{cache: getattr(out, cache)})
            tokens.append(out.logits[:, -1].argmax(-1))
        return torch.stack(tokens, dim=1)
    for _ in range(n_new):
        logits = _call_for_logits(model, ids, torch.ones_like(ids))
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, -n_new:]


def _cache_name(model: Any) -> str:
    """The key/value cache's argument and output name: ``cache`` (transformers >= 5.2x), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _compare(generated: list[int], target: list[int], tokenizer: Any) -> tuple[bool, float, str]:
    """(exact, fraction of target characters matched in place, continuation as shown)."""
    if tokenizer is None:
        matched = sum(g == t for g, t in zip(generated, target))
        return generated[: len(target)] == target, matched / len(target), " ".join(map(str, generated))
    text = tokenizer.decode(generated, skip_special_tokens=True)
    want = tokenizer.decode(target, skip_special_tokens=True)
    if not want:
        raise ValueError(f"a canary's secret tokens {target} decode to empty text; cannot compare characters")
    matched = sum(g == t for g, t in zip(text, want))
    return text[: len(want)] == want, matched / len(want), text
