"""Signed model versions on a shared store: who may publish is who holds the signing key.

A model file is code to the worker that loads it, so a version on object storage must be one the
trainer made.  The trainer signs each version's manifest (which holds the SHA-256 of every file)
with an Ed25519 private key (``MODEL_SIGNING_KEY``) and uploads the signature next to it
(``manifest.sig``); workers hold only the public key (``MODEL_VERIFY_KEY``) and refuse a version
whose manifest is unsigned or signed by another key, before reading anything the manifest
names.  Store credentials that can write are then not enough to make workers load a model, and
workers hold read-only credentials anyway.  ``sentiment-models keygen`` makes a key pair.

Keys are raw 32-byte Ed25519 keys, base64 (URL-safe); ``cryptography`` does the maths.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from shared.store import StoreError

SIGNATURE_FILE = "manifest.sig"


def _key_bytes(value: str, name: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise StoreError(f"{name} is not base64: {exc}") from exc
    if len(raw) != 32:
        raise StoreError(f"{name} must be a 32-byte Ed25519 key (sentiment-models keygen)")
    return raw


def generate() -> tuple[str, str]:
    """A new ``(signing key, verify key)`` pair, base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return (
        base64.urlsafe_b64encode(raw_private).decode(),
        base64.urlsafe_b64encode(raw_public).decode(),
    )


def sign(manifest: bytes, signing_key: str) -> bytes:
    """The signature of a manifest's exact bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(_key_bytes(signing_key, "MODEL_SIGNING_KEY"))
    return key.sign(manifest)


def verify(manifest: bytes, signature: bytes | None, verify_key: str, where: str) -> None:
    """StoreError unless ``signature`` is the verify key's signature of ``manifest``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature:
        raise StoreError(f"{where}: the manifest is not signed (refused: MODEL_VERIFY_KEY is set)")
    key = Ed25519PublicKey.from_public_bytes(_key_bytes(verify_key, "MODEL_VERIFY_KEY"))
    try:
        key.verify(signature, manifest)
    except InvalidSignature as exc:
        raise StoreError(f"{where}: the manifest's signature does not match (refused)") from exc


def keys(env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """``(MODEL_SIGNING_KEY, MODEL_VERIFY_KEY)`` from the environment, None when unset."""
    env = os.environ if env is None else env
    signing = env.get("MODEL_SIGNING_KEY", "").strip() or None
    verifying = env.get("MODEL_VERIFY_KEY", "").strip() or None
    return signing, verifying
