"""Output perturbation: audit a model as a black-box API user sees it.

A model released behind an API can return less than its exact next-token
distribution: a sampling temperature, only the top-k probabilities, probabilities
rounded to a few decimals, or noisy probabilities. :class:`PerturbedOutputModel`
wraps a causal LM so that its ``forward`` returns exactly that view; pass the wrapper
to the auditor in place of the model to measure how much each measure hides.

Pipeline, per position, on the distribution over the vocabulary (size ``V``):

1. ``p = softmax(logits / temperature)``
2. noise: ``p += noise_std * z`` with ``z ~ N(0, 1)``, then clip at 0
3. top-k: every probability outside the ``k`` largest is set to 0
4. rounding: ``p = round(p, round_decimals)``
5. renormalise and floor: ``q = p / sum(p)`` (uniform if everything was zeroed),
   returned as ``log((q + floor) / (1 + V * floor))``

The floor (default ``1e-12``) gives every token a tiny probability so that log
probabilities and NLLs stay finite (``log(1e-12) ≈ -27.6``) where the API reports 0,
and the result still sums to 1. With the identity settings (temperature 1, no top-k,
no rounding, no noise) the wrapper returns ``log_softmax(logits)`` unchanged, and with
only a temperature it returns ``log_softmax(logits / temperature)``, without a floor.

The returned ``.logits`` are these log-probabilities (float32). Since
``log_softmax`` of a log-distribution is itself, scoring code that applies
``log_softmax`` to ``.logits`` gets the perturbed distribution.

Noise is reproducible: the noise vector at a position is drawn from a generator
seeded by ``seed`` and a hash of the tokens up to and including that position (its
prompt), so the same prompt gets the same noisy answer in any batch, with any
padding, on every call, as an API that caches answers would give (averaging repeated
queries gains an attacker nothing).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixing function on a Python int (64-bit result)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _extract_logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        "the wrapped model must return a logits tensor [batch, seq, vocab], an object with "
        f"a .logits tensor, or a tuple whose first item is the logits; got {type(output).__name__}"
    )


class PerturbedOutputModel(nn.Module):
    """Wrap a causal LM so that ``forward`` returns the distribution an API would expose.

    Args:
        model: a HF causal LM (called with keywords), or any callable
            ``model(input_ids, attention_mask)`` (``model(input_ids)`` when there is no
            mask; the convention of :func:`mia_guard.scoring.forward.score_tokens`) returning
            logits ``[B, T, V]`` (a tensor, an object with ``.logits``, or a tuple
            starting with them). An ``nn.Module`` becomes a submodule, so
            ``eval()``/``train()``/``.to()`` reach it.
        temperature: logits are divided by this (``> 0``).
        top_k: keep only the ``k`` most likely tokens per position (``None`` = all).
        round_decimals: round probabilities to this many decimals (``None`` = exact).
        noise_std: standard deviation of the Gaussian noise added to probabilities.
        seed: noise seed.
        floor: probability given to every token after renormalisation (see module doc).

    ``forward(input_ids, attention_mask=None, labels=None, **kwargs)`` passes
    ``attention_mask`` and ``kwargs`` to the model and returns a
    ``transformers`` ``CausalLMOutput`` with ``.logits`` = perturbed log-probabilities
    ``[B, T, V]`` (float32) and, if ``labels`` were given, ``.loss`` = their mean
    next-token NLL (labels ``-100`` ignored), e.g. to measure utility under the API.

    ``get_output_embeddings()`` returns ``None`` and no hidden states are exposed, so
    scoring code cannot bypass the perturbation by recomputing logits itself.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        temperature: float = 1.0,
        top_k: int | None = None,
        round_decimals: int | None = None,
        noise_std: float = 0.0,
        seed: int = 0,
        floor: float = 1e-12,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable (a causal LM), got {type(model).__name__}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        if round_decimals is not None and (
            isinstance(round_decimals, bool) or not isinstance(round_decimals, int) or round_decimals < 0
        ):
            raise ValueError(f"round_decimals must be a non-negative integer or None, got {round_decimals!r}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        if not 0 < floor < 1e-3:
            raise ValueError(f"floor must lie in (0, 1e-3), got {floor!r}")
        self.model = model  # registered as a submodule when it is an nn.Module
        self.temperature = float(temperature)
        self.top_k = top_k
        self.round_decimals = round_decimals
        self.noise_std = float(noise_std)
        self.seed = int(seed)
        self.floor = float(floor)

    @property
    def config(self) -> Any:
        """The wrapped model's ``config`` (``None`` for a plain callable)."""
        return getattr(self.model, "config", None)

    def get_output_embeddings(self) -> None:
        """Always ``None``: a black-box user has no access to the output layer."""
        return None

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, top_k={self.top_k}, round_decimals={self.round_decimals}, "
                f"noise_std={self.noise_std}, seed={self.seed}, floor={self.floor}")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        from transformers.modeling_outputs import CausalLMOutput

        logits = _extract_logits(self._call_model(input_ids, attention_mask, kwargs))
        logp = self.perturb(logits, input_ids, attention_mask)
        loss = None
        if labels is not None:
            shifted = logp[:, :-1].reshape(-1, logp.shape[-1])
            loss = nn.functional.nll_loss(shifted, labels[:, 1:].reshape(-1).to(logp.device), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logp)

    def _call_model(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, kwargs: dict) -> Any:
        """HF models by keyword; other callables as ``f(input_ids, attention_mask)`` like ``score_tokens``."""
        from transformers import PreTrainedModel

        if isinstance(self.model, PreTrainedModel):
            if attention_mask is not None:
                kwargs = {**kwargs, "attention_mask": attention_mask}
            return self.model(input_ids=input_ids, **kwargs)
        if attention_mask is None:
            return self.model(input_ids, **kwargs)
        return self.model(input_ids, attention_mask, **kwargs)

    def perturb(
        self,
        logits: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Perturbed log-probabilities ``[B, T, V]`` (float32) from raw ``logits [B, T, V]``.

        ``input_ids [B, T]`` (and ``attention_mask``) key the noise; see the module doc.
        """
        if logits.dim() != 3:
            raise ValueError(f"logits must be [batch, seq, vocab], got shape {tuple(logits.shape)}")
        logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)
        if self.top_k is None and self.round_decimals is None and self.noise_std == 0.0:
            return logp
        p = logp.exp()
        vocab = p.shape[-1]
        if self.noise_std > 0:
            p = (p + self.noise_std * self._noise(input_ids, attention_mask, vocab, p.device)).clamp_min(0.0)
        if self.top_k is not None and self.top_k < vocab:
            keep = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, p.topk(self.top_k, dim=-1).indices, True)
            p = p.masked_fill(~keep, 0.0)
        if self.round_decimals is not None:
            scale = 10.0 ** self.round_decimals
            p = torch.round(p * scale) / scale
        total = p.sum(dim=-1, keepdim=True)
        q = torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), torch.full_like(p, 1.0 / vocab))
        return torch.log((q + self.floor) / (1.0 + vocab * self.floor))

    def _noise(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab: int, device: torch.device
    ) -> torch.Tensor:
        """Standard normal ``[B, T, V]``, a function of (seed, tokens up to each position)."""
        if input_ids is None:
            raise ValueError("noise_std > 0 needs input_ids: the noise is keyed by the prompt tokens")
        ids = input_ids.detach().cpu().tolist()
        present = (attention_mask.detach().cpu().bool().tolist() if attention_mask is not None
                   else [[True] * len(row) for row in ids])
        noise = torch.zeros((len(ids), len(ids[0]), vocab), dtype=torch.float32)
        generator = torch.Generator()
        for b, (row, mask) in enumerate(zip(ids, present)):
            state = _splitmix64(self.seed & _MASK64)
            for t, (token, real) in enumerate(zip(row, mask)):
                if not real:
                    continue
                state = _splitmix64(state ^ (token & _MASK64))
                generator.manual_seed(state >> 1)  # manual_seed takes values below 2**63
                noise[b, t] = torch.randn(vocab, generator=generator)
        return noise.to(device)
