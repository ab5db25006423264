"""Vocabulary: token <-> id mapping built from training texts, saved as JSON with each model.

Ids: ``0`` is PAD (never produced by a token), ``1`` is OOV, then tokens by descending training
frequency (ties broken alphabetically, so building is deterministic).

Truncation policy (``encode(..., max_len)``): a review longer than ``max_len`` tokens keeps its
first ``head`` tokens and its last ``max_len - head`` tokens, where ``head = round(max_len *
head_fraction)``.  Reviews often open with the premise and end with the verdict, so the tail is
worth keeping.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from shared.text import PREPROCESSING

PAD, OOV = "<pad>", "<oov>"
PAD_ID, OOV_ID = 0, 1
VOCAB_FORMAT = 1
DEFAULT_HEAD_FRACTION = 0.25


class VocabularyError(ValueError):
    """A vocabulary file is malformed or does not match what it is used with."""


@dataclass(frozen=True)
class Encoded:
    """One text encoded for the model."""

    ids: list[int]
    tokens: list[str]  # the kept tokens, aligned with ``ids`` (for explanations)
    n_tokens: int  # tokens before truncation
    oov_count: int  # OOV tokens among the kept ones
    truncated: bool


class Vocabulary:
    """Bidirectional token/id map with PAD and OOV ids."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if len(tokens) < 2 or tokens[PAD_ID] != PAD or tokens[OOV_ID] != OOV:
            raise VocabularyError(f"vocabulary must start with {PAD!r}, {OOV!r}")
        if len(set(tokens)) != len(tokens):
            raise VocabularyError("vocabulary has duplicate tokens")
        self.tokens: list[str] = list(tokens)
        self._index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, tokenized: Iterable[Sequence[str]], size: int, min_count: int = 1) -> Vocabulary:
        """Keep the ``size - 2`` most frequent tokens seen at least ``min_count`` times."""
        if size < 3:
            raise VocabularyError(f"vocabulary size must be >= 3, got {size}")
        counts: Counter[str] = Counter()
        for tokens in tokenized:
            counts.update(tokens)
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in (PAD, OOV)),
            key=lambda t: (-counts[t], t),
        )
        return cls([PAD, OOV, *ranked[: size - 2]])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def id_of(self, token: str) -> int:
        """The id of ``token`` (OOV when unknown)."""
        return self._index.get(token, OOV_ID)

    @property
    def fingerprint(self) -> str:
        """A short hash of the token list, stored in manifests to match model and vocabulary."""
        digest = hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()
        return digest[:16]

    def encode(
        self,
        tokens: Sequence[str],
        max_len: int | None = None,
        head_fraction: float = DEFAULT_HEAD_FRACTION,
    ) -> Encoded:
        """Map tokens to ids, truncating to ``max_len`` by keeping head and tail."""
        kept = list(tokens)
        truncated = max_len is not None and len(kept) > max_len
        if truncated:
            assert max_len is not None
            head = round(max_len * head_fraction)
            tail = max_len - head
            kept = kept[:head] + (kept[-tail:] if tail else [])
        ids = list(map(self._index.get, kept, repeat(OOV_ID)))
        return Encoded(
            ids=ids,
            tokens=kept,
            n_tokens=len(tokens),
            oov_count=ids.count(OOV_ID),
            truncated=truncated,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "format": VOCAB_FORMAT,
            "size": len(self),
            "fingerprint": self.fingerprint,
            "preprocessing": PREPROCESSING,
            "tokens": self.tokens,
        }

    def save(self, path: Path) -> None:
        """Write the vocabulary as JSON (checked again by ``load``)."""
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Load and verify a vocabulary file (format, preprocessing version, fingerprint)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VocabularyError(f"{path}: cannot read vocabulary: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise VocabularyError(f"{path}: unsupported vocabulary format")
        version = data.get("preprocessing", {}).get("version")
        if version != PREPROCESSING["version"]:
            raise VocabularyError(
                f"{path}: built with preprocessing v{version}, this code has "
                f"v{PREPROCESSING['version']}"
            )
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise VocabularyError(f"{path}: 'tokens' must be a list of strings")
        vocab = cls(tokens)
        if data.get("fingerprint") != vocab.fingerprint:
            raise VocabularyError(f"{path}: fingerprint does not match its tokens")
        return vocab
