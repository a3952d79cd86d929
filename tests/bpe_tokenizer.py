"""A real byte-level BPE tokenizer trained offline on the standard library's source (like GPT-2's / SmolLM2's).

Tests of BPE behaviour (merges across the secret, variable token counts) need a real BPE
tokenizer and the machine has no model hub: this one is trained in about a second with
the ``tokenizers`` library that transformers depends on.
"""

from __future__ import annotations

import functools

from mia_guard.experiments.demo_assets import stdlib_corpus


@functools.lru_cache(maxsize=None)
def bpe_tokenizer(vocab_size: int = 2000):
    """A ``PreTrainedTokenizerFast`` with a byte-level BPE of ``vocab_size`` tokens (no special tokens added)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(stdlib_corpus(max_chars=100_000, chunk_chars=200), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
