"""Token-aligned canaries: the same ``T`` scored positions in every canary under one tokenizer.

The sequence attacks model the vector of per-token statistics, so column ``j`` must
mean the same thing in every canary (DESIGN.md, "The real workload"). With a byte-level
tokenizer a 12-character secret is 12 tokens; under a BPE tokenizer it is 6–11, and
"column j" stops meaning "the j-th secret token". This module builds canaries for a
given tokenizer in *token space*:

- templated canaries (:func:`generate_aligned_secrets`): each secret is ``T`` vocabulary
  tokens drawn uniformly from the tokens made of the template's symbols (characters
  of the alphabet; or one alphabet word, with or without the leading separator), and is
  kept only if it *round-trips inside the template*: tokenizing
  ``prefix + secret + suffix`` gives exactly the drawn ``T`` ids at the secret's place
  (rejection sampling, so the secrets are uniform over the round-tripping ones);
- text canaries (:func:`token_windows`): each text is cut to its first ``W`` tokens
  (decoded back to text, which must re-encode to the same ids).

When the template's secrets, drawn character by character as without a tokenizer,
already all have the same number of tokens (a byte-level tokenizer, or a BPE that
splits digits), they are kept as they are: byte tokenizers behave exactly as before.

The canary set then records a :class:`TokenAlignment`: the tokenizer's identity (its
name and a SHA-256 of its vocabulary), ``T`` and the secret space. Encoding or loading
the set with another tokenizer fails with a clear error (:func:`check_tokenizer`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .secret_tokens import encode_with_secret, plain_ids
from .templates import CanaryTemplate

#: Whole-secret draws allowed per requested canary before giving up.
MAX_DRAWS_PER_CANARY = 200


@dataclass(frozen=True)
class TokenizerIdentity:
    """Which tokenizer canaries were built for: its name and a hash of its vocabulary."""

    name: str
    vocab_size: int
    vocab_sha256: str

    @classmethod
    def of(cls, tokenizer: Any) -> "TokenizerIdentity":
        """The identity of a Hugging Face tokenizer (anything with ``get_vocab()``)."""
        get_vocab = getattr(tokenizer, "get_vocab", None)
        if get_vocab is None:
            raise TypeError(
                f"token-aligned canaries need a Hugging Face tokenizer with get_vocab(); got {type(tokenizer).__name__}"
            )
        vocab = sorted((str(token), int(index)) for token, index in get_vocab().items())
        digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=True, separators=(",", ":")).encode("ascii"))
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        return cls(name=str(name), vocab_size=len(vocab), vocab_sha256=digest.hexdigest())


@dataclass(frozen=True)
class TokenAlignment:
    """How a canary set is aligned to a tokenizer.

    Attributes:
        tokenizer: the identity of the tokenizer the canaries were built for.
        num_tokens: ``T``, scored tokens per canary (the same in every canary).
        mode: ``"token_space"`` (secrets drawn as tokens), ``"symbols"`` (the template's
            secrets already had ``T`` tokens each) or ``"window"`` (texts cut to a
            token window).
        secret_space_bits: ``log2`` of the number of possible secrets (templated
            canaries; for ``"token_space"`` estimated as ``T·log2(candidates)`` plus the
            log2 of the measured round-trip rate), else ``None``.
        candidates: vocabulary tokens a secret token is drawn from (``"token_space"``).
    """

    tokenizer: TokenizerIdentity
    num_tokens: int
    mode: str
    secret_space_bits: float | None = None
    candidates: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenAlignment":
        return cls(**{**data, "tokenizer": TokenizerIdentity(**data["tokenizer"])})


def check_tokenizer(alignment: TokenAlignment, tokenizer: Any, what: str = "these canaries") -> None:
    """Raise ``ValueError`` unless ``tokenizer`` is the one ``alignment`` was built for."""
    if tokenizer is None:
        raise ValueError(
            f"{what} are aligned to tokenizer {alignment.tokenizer.name!r}; pass that tokenizer (tokenizer=...)"
        )
    found = TokenizerIdentity.of(tokenizer)
    if found.vocab_sha256 != alignment.tokenizer.vocab_sha256:
        raise ValueError(
            f"{what} were built for tokenizer {alignment.tokenizer.name!r} ({alignment.tokenizer.vocab_size} tokens, "
            f"vocabulary sha256 {alignment.tokenizer.vocab_sha256[:12]}), but got {found.name!r} "
            f"({found.vocab_size} tokens, sha256 {found.vocab_sha256[:12]}): their {alignment.num_tokens} scored "
            "positions would not line up. Use the training run's tokenizer, or generate canaries for this one."
        )


# ---------------------------------------------------------------------------- templated secrets
def secret_candidates(template: CanaryTemplate, tokenizer: Any) -> tuple[list[int], list[str]]:
    """Vocabulary tokens a secret token may be, with the symbol text each stands for.

    Character alphabets (``separator == ""``, one-character symbols): every token whose
    decoded text is non-empty and made only of alphabet characters. Word alphabets: the
    symbols whose ``separator + symbol`` is one token (as a word appears after a
    separator); if fewer than 2 are, the symbols that are one token alone. Symbols that
    are several tokens are left out.
    """
    if template.separator == "":
        if any(len(symbol) != 1 for symbol in template.alphabet):
            raise ValueError(
                f"template {template.name!r}: token-aligned secrets need one-character symbols or a separator "
                "between symbols"
            )
        allowed = set(template.alphabet)
        ids, texts = [], []
        for index in sorted(set(tokenizer.get_vocab().values())):
            text = tokenizer.decode([index])
            if text and set(text) <= allowed:
                ids.append(index)
                texts.append(text)
        return ids, texts
    for with_separator in (True, False):
        ids, texts = [], []
        for symbol in template.alphabet:
            encoded = plain_ids(tokenizer, template.separator + symbol if with_separator else symbol)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
                texts.append(symbol)
        if len(ids) >= 2:
            break
    return ids, texts


def secret_token_ids(template: CanaryTemplate, secret: str, tokenizer: Any) -> list[int]:
    """The ids of the tokens covering ``secret`` in ``template.render(secret)`` (plain encoding)."""
    start = len(template.prefix)
    full, first, last = encode_with_secret(template.render(secret), (start, start + len(secret)), tokenizer)
    return full[first:last]


def generate_aligned_secrets(
    template: CanaryTemplate, n: int, tokenizer: Any, rng: np.random.Generator, num_tokens: int | None = None
) -> tuple[list[str], TokenAlignment]:
    """``n`` distinct secrets with exactly ``T`` tokens each in ``template``'s context, and the alignment.

    First the template's own secrets are tried (drawn symbol by symbol, as without a
    tokenizer): if ``num_tokens`` is ``None`` or equal to their token count, and all
    ``n`` have the same count, they are kept (``mode="symbols"``). Otherwise secrets
    are drawn in token space (module docstring; ``T = num_tokens``, default the
    template's ``secret_length``).

    Raises:
        ValueError: no vocabulary token fits the template's alphabet, or too few drawn
            secrets round-trip (the tokenizer cannot produce ``T``-token secrets there).
    """
    identity = TokenizerIdentity.of(tokenizer)
    symbol_secrets = _distinct(n, lambda: template.sample_secret(rng), n * MAX_DRAWS_PER_CANARY)
    counts = {len(secret_token_ids(template, s, tokenizer)) for s in symbol_secrets[: min(n, 256)]}
    if len(counts) == 1 and (num_tokens is None or counts == {num_tokens}):
        count = counts.pop()
        if all(len(secret_token_ids(template, s, tokenizer)) == count for s in symbol_secrets[256:]):
            return symbol_secrets, TokenAlignment(identity, count, "symbols", template.secret_space_bits)
    num_tokens = template.secret_length if num_tokens is None else int(num_tokens)
    if num_tokens < 1:
        raise ValueError(f"secret_tokens must be >= 1, got {num_tokens}")
    ids, texts = secret_candidates(template, tokenizer)
    if len(ids) < 2:
        raise ValueError(
            f"tokenizer {identity.name!r} has {len(ids)} vocabulary tokens made of template {template.name!r}'s "
            f"symbols; a {num_tokens}-token secret needs at least 2. Use another template (a wider alphabet) "
            "or a tokenizer that keeps the alphabet's symbols as tokens."
        )
    if n > len(ids) ** num_tokens // 2:
        raise ValueError(
            f"{n} canaries do not fit: {len(ids)} candidate tokens give only {len(ids) ** num_tokens} secrets of "
            f"{num_tokens} tokens; use fewer canaries or more secret tokens (secret_tokens=...)"
        )
    draws = {"all": 0, "kept": 0}

    def draw() -> str | None:
        picked = rng.integers(0, len(ids), size=num_tokens)
        secret = template.separator.join(texts[i] for i in picked)
        draws["all"] += 1
        if secret_token_ids(template, secret, tokenizer) != [ids[i] for i in picked]:
            return None
        draws["kept"] += 1
        return secret

    secrets = _distinct(n, draw, n * MAX_DRAWS_PER_CANARY)
    if len(secrets) < n:
        raise ValueError(
            f"tokenizer {identity.name!r} cannot produce {num_tokens}-token secrets for template {template.name!r}: "
            f"only {draws['kept']} of {draws['all']} drawn secrets tokenize back to their own {num_tokens} tokens "
            "inside the template. Use fewer secret tokens (secret_tokens=...), a template whose prefix and suffix "
            "end/start with punctuation or a space, or another template."
        )
    bits = num_tokens * math.log2(len(ids)) + math.log2(draws["kept"] / draws["all"])
    return secrets, TokenAlignment(identity, num_tokens, "token_space", bits, len(ids))


def _distinct(n: int, draw, max_draws: int) -> list[str]:
    """Up to ``n`` distinct non-``None`` values of ``draw()``, in draw order, within ``max_draws`` calls."""
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(max_draws):
        if len(out) == n:
            break
        value = draw()
        if value is not None and value not in seen:
            seen.add(value)
            out.append(value)
    return out


# ---------------------------------------------------------------------------- text windows
def cut_to_window(text: str, tokenizer: Any, window: int) -> str | None:
    """``text`` cut to its first ``window`` tokens, or ``None`` if it is shorter or the cut
    does not re-encode to the same ids (e.g. it ends inside a run of newlines)."""
    ids = plain_ids(tokenizer, text)
    if len(ids) < window:
        return None
    cut = tokenizer.decode(ids[:window])
    return cut if plain_ids(tokenizer, cut) == ids[:window] else None


def token_windows(texts: Sequence[str], tokenizer: Any, window: int) -> tuple[list[str], TokenAlignment]:
    """Each text cut to its first ``window`` tokens (decoded back to text), and the alignment.

    Raises:
        ValueError: ``window < 2``, a text shorter than ``window`` tokens, or a cut
            that does not re-encode to the same ids (the index and the fix are named).
    """
    if window < 2:
        raise ValueError(f"window_tokens must be >= 2 (the first token has no context), got {window}")
    identity = TokenizerIdentity.of(tokenizer)
    out = []
    for index, text in enumerate(texts):
        cut = cut_to_window(text, tokenizer, window)
        if cut is None:
            count = len(plain_ids(tokenizer, text))
            problem = (f"has {count} tokens, fewer than window_tokens={window}" if count < window
                       else f"cut to {window} tokens does not tokenize back to the same tokens")
            raise ValueError(
                f"canary text {index} {problem}; drop that text (mia_guard.canaries.token_alignment.cut_to_window "
                "returns None for such texts) or change window_tokens"
            )
        out.append(cut)
    return out, TokenAlignment(identity, window, "window")
