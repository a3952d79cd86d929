"""Fine-tune only the top layers of a causal LM from cached activations of its frozen lower layers.

When only the top ``k`` decoder layers of a pretrained LM train (the users' fine-tuning
setting in the real-model benchmarks), the lower layers compute the same activations
for a sequence at every step: they are frozen and deterministic (eval mode; Llama has
no dropout). :class:`FrozenPrefix` runs them once per sequence, keeps the hidden state
entering layer ``L - k``, and trains/scores a *top model* (a copy of the last ``k``
layers, the final norm and the tied head) on those states. Training the top model is
the same computation as training the full model with the lower layers frozen, at a
fraction of the cost, which makes several runs per setting affordable on a 2-core CPU.
:meth:`FrozenPrefix.check` verifies the equivalence numerically.

Only Llama-style models (``model.model.layers``, ``model.model.norm``,
``model.lm_head``; SmolLM2) are supported. Sequences are right-padded.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch


class FrozenPrefix:
    """A causal LM split into frozen lower layers (run once, cached) and a trainable top.

    Args:
        model: a Hugging Face Llama-style causal LM (its weights are not changed).
        trainable_layers: ``k``, the number of top decoder layers that train.

    Attributes:
        top: the top model (``k`` layers, final norm, head); only its layers require grad.
    """

    def __init__(self, model: Any, trainable_layers: int) -> None:
        layers = model.model.layers
        if not 1 <= trainable_layers < len(layers):
            raise ValueError(f"trainable_layers must be in [1, {len(layers) - 1}], got {trainable_layers}")
        self.model = model.eval()
        self.split = len(layers) - trainable_layers
        config = copy.deepcopy(model.config)
        config.num_hidden_layers = trainable_layers
        top = type(model)(config)
        state = {}
        for name, value in model.state_dict().items():
            if name.startswith("model.layers."):
                index, rest = name[len("model.layers."):].split(".", 1)
                if int(index) < self.split:
                    continue
                name = f"model.layers.{int(index) - self.split}.{rest}"
            state[name] = value.clone()
        top.load_state_dict(state, strict=False)
        top.tie_weights()
        for name, param in top.named_parameters():
            param.requires_grad_(name.startswith("model.layers."))
        self.top = top.eval()

    @torch.no_grad()
    def hidden(self, sequences: Sequence[Sequence[int]], batch_size: int = 16) -> list[torch.Tensor]:
        """The hidden state entering the first trainable layer, ``[len_i, H]`` per sequence."""
        captured: list[torch.Tensor] = []
        layers = self.model.model.layers
        handle = layers[self.split - 1].register_forward_hook(
            lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
        )
        self.model.model.layers = layers[: self.split]
        out: list[torch.Tensor] = []
        try:
            for start in range(0, len(sequences), batch_size):
                rows = [list(s) for s in sequences[start : start + batch_size]]
                ids, attention = pad(rows)
                captured.clear()
                self.model.model(input_ids=ids, attention_mask=attention)
                out.extend(captured[-1][i, : len(r)].clone() for i, r in enumerate(rows))
        finally:
            self.model.model.layers = layers
            handle.remove()
        return out

    def logits(self, hidden: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-model logits ``[B, T, V]`` of right-padded ``hidden`` states, and the attention mask ``[B, T]``."""
        width = max(h.shape[0] for h in hidden)
        states = torch.zeros(len(hidden), width, hidden[0].shape[1])
        attention = torch.zeros(len(hidden), width, dtype=torch.long)
        for i, h in enumerate(hidden):
            states[i, : h.shape[0]] = h
            attention[i, : h.shape[0]] = 1
        return self.top(inputs_embeds=states, attention_mask=attention).logits, attention

    def scorer(self, sequences: Sequence[Sequence[int]], hidden: Sequence[torch.Tensor]):
        """A callable ``f(input_ids, attention_mask) -> logits`` for :func:`~mia_guard.scoring.forward.score_tokens`
        that runs the top model on the cached states of ``sequences`` (looked up by their ids)."""
        table = {tuple(int(t) for t in s): h for s, h in zip(sequences, hidden)}

        def forward(ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
            rows = [tuple(ids[i, : int(attention[i].sum())].tolist()) for i in range(ids.shape[0])]
            missing = [r for r in rows if r not in table]
            if missing:
                raise KeyError(f"{len(missing)} scored sequences have no cached hidden state")
            logits, _ = self.logits([table[r] for r in rows])
            return logits[:, : ids.shape[1]]

        return forward

    @torch.no_grad()
    def check(self, sequence: Sequence[int], atol: float = 1e-3) -> float:
        """Max |logit difference| between the full model and the cached path on one sequence (raises above ``atol``)."""
        ids = torch.tensor([list(sequence)])
        full = self.model(input_ids=ids).logits[0]
        cached, _ = self.logits(self.hidden([sequence]))
        diff = float((full - cached[0]).abs().max())
        if diff > atol:
            raise RuntimeError(f"the cached top-layer path differs from the full model by {diff:.2e} (> {atol})")
        return diff


def pad(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` ``[B, max_len]``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attention[i, : len(r)] = 1
    return ids, attention


def training_loss(
    prefix: FrozenPrefix, hidden: Sequence[torch.Tensor], sequences: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Mean next-token cross-entropy of the top model over a batch (padding ignored), as the Trainer computes it."""
    logits, attention = prefix.logits(hidden)
    ids, _ = pad(sequences)
    labels = ids.masked_fill(attention == 0, -100)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
