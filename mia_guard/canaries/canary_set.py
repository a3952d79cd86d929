"""CanarySet: canaries, their seeded membership split, insertion into data, and files.

Three kinds of canaries:

- ``templated``: random secrets in a :class:`~mia_guard.canaries.templates.CanaryTemplate`
  (:meth:`CanarySet.generate`); the secret's tokens are the scored positions.
- ``texts``: in-distribution samples, e.g. held-out documents (:meth:`CanarySet.from_texts`).
- ``tokens``: token-id sequences with no text, e.g. image tokens (:meth:`CanarySet.from_token_ids`).

Membership (``is_member``, bool ``[N]``, ``True`` = inserted into training) is drawn
from the seed: by default an independent fair coin per canary, which the one-run ε
lower bound (Steinke et al. 2023) requires; ``split="half"`` draws an exact half.

Given the training tokenizer, :meth:`CanarySet.generate` and :meth:`CanarySet.from_texts`
build *token-aligned* canaries (the same ``T`` scored positions in every canary; see
:mod:`mia_guard.canaries.token_alignment`) and the set records the tokenizer's identity
(:attr:`CanarySet.alignment`); encoding or loading it with another tokenizer fails.

Files: format version 2 adds the optional ``token_alignment`` field; version-1 files
(written before it existed) load unchanged, with no alignment.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._io import atomic_write_json, check_format, read_json
from .checks import check_distinct, check_secrets
from .images import distinct_image_tokens
from .near_copies import NEAR_COPY_SHARE, SUBSTRING_CHARS, near_copies
from .templates import CanaryTemplate, resolve_template
from .token_alignment import TokenAlignment, check_tokenizer

FORMAT = "mia_guard.canaries"
FORMAT_VERSION = 2  # version 1 files are read through migrate_canary_file
SPLITS = ("coin", "half")


@dataclass(frozen=True)
class Canary:
    """One canary. ``text`` is ``None`` for token-only canaries.

    Attributes:
        text: the full canary text.
        token_ids: the canary's token ids (token-only canaries), else ``None``.
        secret: the secret string (templated canaries), else ``None``.
        secret_span: ``(start, end)`` character offsets of the secret in ``text``.
    """

    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    secret: str | None = None
    secret_span: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": list(self.token_ids) if self.token_ids is not None else None,
            "secret": self.secret,
            "secret_span": list(self.secret_span) if self.secret_span is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Canary":
        return cls(
            text=data["text"],
            token_ids=tuple(data["token_ids"]) if data["token_ids"] is not None else None,
            secret=data["secret"],
            secret_span=tuple(data["secret_span"]) if data["secret_span"] is not None else None,
        )


def draw_membership(n: int, seed: int, split: str = "coin") -> np.ndarray:
    """Bool ``[n]`` membership from ``seed``: fair coins (``"coin"``) or an exact half (``"half"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, 1])
    if split == "coin":
        return rng.random(n) < 0.5
    is_member = np.zeros(n, dtype=bool)
    is_member[rng.permutation(n)[: n // 2]] = True
    return is_member


def _warn_of_near_copies(texts: Sequence[str], is_member: np.ndarray) -> None:
    """Warn naming the non-member texts that are near copies of member texts."""
    copies = near_copies(texts, is_member)
    if copies:
        shown = ", ".join(f"{c.non_member} ~ {c.member} ({c.share:.0%})" for c in copies[:5])
        warnings.warn(
            f"{len(copies)} of {int((~is_member).sum())} non-member canaries are near copies of member canaries "
            f"(at least {NEAR_COPY_SHARE:.0%} of their {SUBSTRING_CHARS}-character substrings occur in a member; "
            f"non-member ~ member: {shown}{', ...' if len(copies) > 5 else ''}). A model that generalizes to near "
            "copies scores them like members, which lowers TPR at low FPR. Take canary texts from different "
            "documents, or drop these (mia_guard.canaries.near_copies.near_copies lists them all)",
            UserWarning,
            stacklevel=3,
        )


class CanarySet:
    """An ordered set of canaries with a membership split. Immutable after construction."""

    def __init__(
        self,
        canaries: Sequence[Canary],
        is_member: np.ndarray,
        *,
        kind: str,
        seed: int,
        split: str,
        template: CanaryTemplate | None = None,
        alignment: TokenAlignment | None = None,
    ) -> None:
        if len(canaries) == 0:
            raise ValueError("a CanarySet needs at least one canary")
        is_member = np.asarray(is_member, dtype=bool)
        if is_member.shape != (len(canaries),):
            raise ValueError(f"is_member has shape {is_member.shape}, expected ({len(canaries)},)")
        check_distinct(canaries)
        check_secrets(canaries)
        self.canaries = tuple(canaries)
        self.is_member = is_member
        self.is_member.setflags(write=False)
        self.kind = kind
        self.seed = seed
        self.split = split
        self.template = template
        self.alignment = alignment

    # ------------------------------------------------------------------ constructors
    @classmethod
    def generate(
        cls,
        n: int,
        template: str | CanaryTemplate = "code_credential",
        seed: int = 0,
        split: str = "coin",
        *,
        tokenizer: Any = None,
        secret_tokens: int | None = None,
    ) -> "CanarySet":
        """``n`` canaries with distinct random secrets in ``template`` (a built-in name or a
        :class:`CanaryTemplate`); membership from ``seed``.

        With ``tokenizer`` (the training tokenizer) every secret is exactly ``T`` tokens
        that round-trip inside the template (``T = secret_tokens``, default the template's
        ``secret_length``; :func:`~mia_guard.canaries.token_alignment.generate_aligned_secrets`),
        so every canary scores the same ``T`` positions; a byte-level tokenizer keeps the
        secrets drawn without it. Raises ``ValueError`` when the tokenizer cannot produce
        ``T``-token secrets for the template.
        """
        template = resolve_template(template)
        if tokenizer is not None:
            return cls._generate_aligned(n, template, seed, split, tokenizer, secret_tokens)
        if secret_tokens is not None:
            raise ValueError("secret_tokens needs the tokenizer the secrets are counted in: pass tokenizer=...")
        if n < 2:
            raise ValueError(f"generate needs n >= 2 canaries (members and non-members), got {n}")
        if n > template.secret_space_size // 2:
            raise ValueError(
                f"{n} canaries do not fit template {template.name!r}: only {template.secret_space_size} secrets exist; "
                "use fewer canaries or a longer secret"
            )
        rng = np.random.default_rng([seed, 0])
        secrets: list[str] = []
        seen: set[str] = set()
        while len(secrets) < n:
            secret = template.sample_secret(rng)
            if secret not in seen:
                seen.add(secret)
                secrets.append(secret)
        start = len(template.prefix)
        canaries = [
            Canary(text=template.render(s), secret=s, secret_span=(start, start + len(s))) for s in secrets
        ]
        return cls(canaries, draw_membership(n, seed, split), kind="templated", seed=seed, split=split, template=template)

    @classmethod
    def _generate_aligned(
        cls, n: int, template: CanaryTemplate, seed: int, split: str, tokenizer: Any, secret_tokens: int | None
    ) -> "CanarySet":
        """:meth:`generate` with a tokenizer: secrets of exactly ``T`` tokens, the alignment recorded."""
        from .token_alignment import generate_aligned_secrets

        if n < 2:
            raise ValueError(f"generate needs n >= 2 canaries (members and non-members), got {n}")
        rng = np.random.default_rng([seed, 0])
        secrets, alignment = generate_aligned_secrets(template, n, tokenizer, rng, secret_tokens)
        start = len(template.prefix)
        canaries = [
            Canary(text=template.render(s), secret=s, secret_span=(start, start + len(s))) for s in secrets
        ]
        return cls(canaries, draw_membership(n, seed, split), kind="templated", seed=seed, split=split,
                   template=template, alignment=alignment)

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        seed: int = 0,
        split: str = "coin",
        *,
        tokenizer: Any = None,
        window_tokens: int | None = None,
    ) -> "CanarySet":
        """In-distribution canaries (e.g. held-out documents); every token after the first is scored.

        With ``window_tokens`` (and the training ``tokenizer``) each text is cut to its first
        ``window_tokens`` tokens, so every canary scores the same positions
        (:func:`~mia_guard.canaries.token_alignment.token_windows`); texts shorter than the
        window are refused. Warns when non-members are near copies of members
        (:func:`~mia_guard.canaries.near_copies.near_copies`): take such texts from
        different documents.
        """
        texts = list(texts)
        alignment = None
        if (window_tokens is None) != (tokenizer is None):
            raise ValueError("a fixed token window needs both tokenizer=... and window_tokens=...")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise ValueError(f"canary text {i} is empty or not a string; every canary needs some text")
        if len(set(texts)) != len(texts):
            raise ValueError("canary texts contain duplicates; membership of a duplicated text is ambiguous")
        if window_tokens is not None:
            from .token_alignment import token_windows

            texts, alignment = token_windows(texts, tokenizer, int(window_tokens))
            if len(set(texts)) != len(texts):
                raise ValueError(
                    f"canary texts cut to {window_tokens} tokens contain duplicates (texts that start alike); "
                    "use a longer window or drop texts with a common start"
                )
        is_member = draw_membership(len(texts), seed, split)
        _warn_of_near_copies(texts, is_member)
        return cls([Canary(text=t) for t in texts], is_member, kind="texts", seed=seed, split=split, alignment=alignment)

    @classmethod
    def from_token_ids(cls, sequences: Sequence[Sequence[int]], seed: int = 0, split: str = "coin") -> "CanarySet":
        """Token-only canaries (e.g. image tokens); scored from the second token on."""
        canaries = []
        for i, seq in enumerate(sequences):
            ids = tuple(int(t) for t in seq)
            if len(ids) < 2:
                raise ValueError(f"canary {i} has {len(ids)} tokens; at least 2 are needed (the first has no context)")
            if min(ids) < 0:
                raise ValueError(f"canary {i} has a negative token id")
            canaries.append(Canary(token_ids=ids))
        if len({c.token_ids for c in canaries}) != len(canaries):
            raise ValueError("canary token sequences contain duplicates; membership of a duplicate is ambiguous")
        return cls(canaries, draw_membership(len(canaries), seed, split), kind="tokens", seed=seed, split=split)

    @classmethod
    def from_images(
        cls,
        images: Any,
        levels: int = 16,
        seed: int = 0,
        split: str = "coin",
        *,
        value_range: tuple[float, float] | None = None,
        bos: bool = True,
    ) -> "CanarySet":
        """Token canaries of images ``[N, H, W]`` / ``[N, H, W, C]`` for autoregressive image models:
        pixels quantized to ``levels`` grey levels over ``value_range``, raster order, a BOS token
        ``levels`` first if ``bos``. See :mod:`mia_guard.canaries.images` (vocabulary, decoding, figures)."""
        return cls.from_token_ids(distinct_image_tokens(images, levels, value_range, bos), seed=seed, split=split)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.canaries)

    def __getitem__(self, index: int) -> Canary:
        return self.canaries[index]

    @property
    def texts(self) -> list[str] | None:
        """The canary texts, or ``None`` for token-only canaries."""
        return None if self.kind == "tokens" else [c.text for c in self.canaries]

    @property
    def members(self) -> list[Canary]:
        return [c for c, m in zip(self.canaries, self.is_member) if m]

    @property
    def non_members(self) -> list[Canary]:
        return [c for c, m in zip(self.canaries, self.is_member) if not m]

    @property
    def secret_space_size(self) -> float | None:
        """Number of possible secrets (templated canaries; token-aligned ones: see :attr:`secret_space_bits`)."""
        bits = self.secret_space_bits
        if bits is None:
            return None
        if self.alignment is None or self.alignment.mode == "symbols":
            return self.template.secret_space_size
        return float(2.0**bits)

    @property
    def secret_space_bits(self) -> float | None:
        """``log2`` of the secret space: the template's, or the token-space one of aligned canaries."""
        if self.template is None:
            return None
        if self.alignment is not None and self.alignment.secret_space_bits is not None:
            return float(self.alignment.secret_space_bits)
        return float(self.template.secret_space_bits)

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ``ValueError`` if the set is token-aligned to another tokenizer than ``tokenizer``."""
        if self.alignment is not None:
            check_tokenizer(self.alignment, tokenizer)

    def with_membership(self, is_member: np.ndarray) -> "CanarySet":
        """The same canaries with another split (e.g. for multi-run LiRA reference runs)."""
        return CanarySet(
            self.canaries, is_member, kind=self.kind, seed=self.seed, split="custom", template=self.template,
            alignment=self.alignment,
        )

    def __repr__(self) -> str:
        name = f", template={self.template.name!r}" if self.template else ""
        return f"CanarySet(n={len(self)}, members={int(self.is_member.sum())}, kind={self.kind!r}{name}, seed={self.seed})"

    # ------------------------------------------------------------------ insertion
    def insert_into(self, data: Any, repetitions: int = 1, seed: int | None = None, **options: Any) -> Any:
        """Insert every member ``repetitions`` times at random positions of ``data``.

        See :func:`mia_guard.canaries.insertion.insert_canaries` for the supported data types
        (list of strings / token sequences / dicts, ``datasets.Dataset``, torch ``Dataset``)
        and ``options`` (``tokenizer``, ``text_field``).
        """
        from .insertion import insert_canaries

        return insert_canaries(self, data, repetitions=repetitions, seed=self.seed if seed is None else seed, **options)

    # ------------------------------------------------------------------ files
    def _content(self) -> dict:
        return {
            "kind": self.kind,
            "seed": self.seed,
            "split": self.split,
            "template": self.template.to_dict() if self.template else None,
            "canaries": [c.to_dict() for c in self.canaries],
            "is_member": [bool(m) for m in self.is_member],
            # only when set, so sets without alignment keep the content hash of version-1 files
            **({"token_alignment": self.alignment.to_dict()} if self.alignment is not None else {}),
        }

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of the canaries and split (identifies the set)."""
        canonical = json.dumps(self._content(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set as JSON (atomically) with its content hash."""
        return atomic_write_json(
            path, {"format": FORMAT, "version": FORMAT_VERSION, "sha256": self.content_hash, **self._content()}
        )

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: Any = None) -> "CanarySet":
        """Read a file written by :meth:`save`; refuses edited or corrupt files, and (given
        ``tokenizer``) token-aligned canaries built for another tokenizer."""
        path = Path(path)
        data = migrate_canary_file(read_json(path, "canary file"))
        check_format(data, fmt=FORMAT, version=FORMAT_VERSION, what="canary file", source=path, version_key="version")
        try:
            template = CanaryTemplate.from_dict(data["template"]) if data["template"] else None
            loaded = cls(
                [Canary.from_dict(c) for c in data["canaries"]],
                np.array(data["is_member"], dtype=bool),
                kind=data["kind"],
                seed=data["seed"],
                split=data["split"],
                template=template,
                alignment=TokenAlignment.from_dict(data["token_alignment"]) if data.get("token_alignment") else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"canary file {path} is malformed ({err!r}); regenerate it") from err
        if loaded.content_hash != data.get("sha256"):
            raise ValueError(
                f"canary file {path} does not match its content hash: it was edited or corrupted. "
                "Canaries must be exactly those used in training; restore the original file."
            )
        if tokenizer is not None:
            loaded.check_tokenizer(tokenizer)
        return loaded


def migrate_canary_file(data: Any) -> Any:
    """A version-1 canary file's dict as version 2 (no token alignment); other data unchanged."""
    if isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") == 1:
        return {**data, "version": FORMAT_VERSION}
    return data
