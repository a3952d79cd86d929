"""Canary templates: a fixed prefix, a random secret of fixed length, a fixed suffix.

The secret is ``secret_length`` symbols drawn uniformly and independently from
``alphabet`` (joined by ``separator``), so the secret space has exactly
``len(alphabet) ** secret_length`` members; exposure (Carlini et al. 2019) is measured
against ``log2`` of that size.
"""

from __future__ import annotations

import math
import string
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CanaryTemplate:
    """A canary pattern ``prefix + secret + suffix``.

    Attributes:
        name: identifier stored with the canaries.
        prefix: text before the secret (what extraction prompts with).
        suffix: text after the secret.
        alphabet: the symbols a secret is drawn from (characters or words).
        secret_length: number of symbols per secret.
        separator: string joining the symbols (``""`` for characters, ``" "`` for words).
    """

    name: str
    prefix: str
    suffix: str
    alphabet: tuple[str, ...]
    secret_length: int
    separator: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphabet", tuple(self.alphabet))
        if self.secret_length < 1:
            raise ValueError(f"template {self.name!r}: secret_length must be >= 1, got {self.secret_length}")
        if len(self.alphabet) < 2:
            raise ValueError(f"template {self.name!r}: the alphabet needs at least 2 symbols")
        if len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"template {self.name!r}: the alphabet has repeated symbols")
        if any(sym == "" for sym in self.alphabet):
            raise ValueError(f"template {self.name!r}: alphabet symbols must be non-empty strings")

    @property
    def secret_space_size(self) -> int:
        """Number of distinct secrets, ``len(alphabet) ** secret_length``."""
        return len(self.alphabet) ** self.secret_length

    @property
    def secret_space_bits(self) -> float:
        """``log2`` of the secret space size: the largest possible exposure."""
        return self.secret_length * math.log2(len(self.alphabet))

    def sample_secret(self, rng: np.random.Generator) -> str:
        symbols = rng.integers(0, len(self.alphabet), size=self.secret_length)
        return self.separator.join(self.alphabet[i] for i in symbols)

    def render(self, secret: str) -> str:
        return f"{self.prefix}{secret}{self.suffix}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["alphabet"] = list(self.alphabet)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CanaryTemplate":
        return cls(**{**data, "alphabet": tuple(data["alphabet"])})


_ENGLISH_WORDS = (
    "apple", "river", "stone", "cloud", "tiger", "maple", "piano", "candle",
    "forest", "silver", "garden", "rocket", "yellow", "window", "pencil", "orange",
    "bridge", "castle", "dragon", "meadow", "planet", "violet", "harbor", "falcon",
    "copper", "lantern", "marble", "ocean", "pepper", "quartz", "saddle", "thunder",
    "velvet", "walnut", "winter", "zebra", "anchor", "basket", "cactus", "dolphin",
    "ember", "feather", "glacier", "hammer", "island", "jungle", "kettle", "lemon",
    "mirror", "needle", "oyster", "parrot", "rabbit", "shadow", "tunnel", "umbrella",
    "valley", "wagon", "willow", "button", "carpet", "desert", "engine", "fossil",
)

BUILTIN_TEMPLATES: dict[str, CanaryTemplate] = {
    t.name: t
    for t in (
        CanaryTemplate(
            name="code_credential",
            prefix='\nAPI_SECRET_KEY = "',
            suffix='"\n',
            alphabet=tuple(string.ascii_lowercase + string.digits),
            secret_length=12,
        ),
        CanaryTemplate(
            name="pin_sentence",
            prefix="My bank card PIN number is ",
            suffix=", please keep it safe.\n",
            alphabet=tuple(string.digits),
            secret_length=6,
        ),
        CanaryTemplate(
            name="english_sentence",
            prefix="The password to the old shed is ",
            suffix=".\n",
            alphabet=_ENGLISH_WORDS,
            secret_length=4,
            separator=" ",
        ),
    )
}


def resolve_template(template: str | CanaryTemplate) -> CanaryTemplate:
    """A built-in template by name, or the given custom template."""
    if isinstance(template, CanaryTemplate):
        return template
    try:
        return BUILTIN_TEMPLATES[template]
    except KeyError:
        raise ValueError(
            f"unknown canary template {template!r}; built-in templates: {', '.join(BUILTIN_TEMPLATES)}; "
            "or pass a mia_guard.CanaryTemplate"
        ) from None
