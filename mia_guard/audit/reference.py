"""Checks that an explicit reference model can calibrate the audited model's per-token statistics.

Calibrated attacks (``reference``, ``lira_online_ref``, ``seq_lira_ref``,
``seq_lira_refcal``) compare, token by token, what the audited model and a reference
model predict for the same canary tokens. By default the reference is the step-0 model
(the pretrained base of a fine-tune); a run that resumes from a fine-tuned checkpoint
passes the base model explicitly (``reference_model=``). That only means something
when both models read the same token ids and predict over the same vocabulary, i.e.
when the reference is the audited model's architecture with its tokenizer.
:func:`check_reference_model` refuses anything else *before training starts*, with the
cause and the fix.
"""

from __future__ import annotations

from typing import Any

from ..canaries.token_alignment import TokenizerIdentity

#: Config fields that must agree between the audited model and its reference.
ARCHITECTURE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def _unwrap(model: Any) -> Any:
    """The plain transformers model under PEFT / DDP wrappers."""
    for _ in range(4):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and not hasattr(model, "config"):
            model = model.module
        else:
            break
    return model


def _vocabulary_rows(model: Any) -> int | None:
    get_output = getattr(model, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if weight is not None else None


def check_reference_model(
    model: Any, reference_model: Any, *, tokenizer: Any = None, reference_tokenizer: Any = None
) -> None:
    """Raise ``ValueError`` unless ``reference_model`` can serve as ``model``'s reference.

    Args:
        model: the audited (step-0) model, a transformers causal LM (PEFT/DDP wrappers allowed).
        reference_model: the explicit reference model.
        tokenizer: the training tokenizer; with ``reference_tokenizer``, both must be the
            same tokenizer (vocabulary hash, :class:`~mia_guard.canaries.token_alignment.TokenizerIdentity`).
        reference_tokenizer: the tokenizer the reference model was trained with, if known.

    Raises:
        ValueError: different architecture (class, model type, sizes), vocabulary or tokenizer.
        TypeError: either model is not a transformers model (no ``config``).
    """
    audited, reference = _unwrap(model), _unwrap(reference_model)
    for what, m in (("the audited model", audited), ("reference_model", reference)):
        if getattr(m, "config", None) is None:
            raise TypeError(
                f"{what} must be a transformers causal LM (with a .config), got {type(m).__name__}; "
                "for a custom model score it yourself and pass its TokenStats to Auditor.set_reference"
            )
    fix = ("pass the base model this run started from (the same architecture and tokenizer), or leave "
           "reference_model unset to use the step-0 model")
    if type(audited).__name__ != type(reference).__name__:
        raise ValueError(
            f"reference_model is a {type(reference).__name__}, the audited model a {type(audited).__name__}: "
            f"per-token statistics of different architectures cannot be compared; {fix}"
        )
    for name in ARCHITECTURE_FIELDS:
        mine, theirs = getattr(audited.config, name, None), getattr(reference.config, name, None)
        if mine != theirs:
            kind = "vocabulary" if name == "vocab_size" else "architecture"
            raise ValueError(
                f"reference_model has a different {kind}: config.{name} = {theirs!r}, the audited model's is "
                f"{mine!r}; {fix}"
            )
    rows, reference_rows = _vocabulary_rows(audited), _vocabulary_rows(reference)
    if rows is not None and reference_rows is not None and rows != reference_rows:
        raise ValueError(
            f"reference_model predicts over {reference_rows} tokens, the audited model over {rows} (resized "
            f"embeddings): token ids do not mean the same thing; {fix}"
        )
    if tokenizer is not None and reference_tokenizer is not None:
        mine, theirs = TokenizerIdentity.of(tokenizer), TokenizerIdentity.of(reference_tokenizer)
        if mine.vocab_sha256 != theirs.vocab_sha256:
            raise ValueError(
                f"reference_model's tokenizer {theirs.name!r} ({theirs.vocab_size} tokens) is not the training "
                f"tokenizer {mine.name!r} ({mine.vocab_size} tokens): the canaries' token ids would mean different "
                f"text to it; {fix}"
            )
