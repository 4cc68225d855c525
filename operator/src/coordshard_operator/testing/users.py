"""Throwaway NATS nkey users for tests: a seed, its public key, the server's config."""

from __future__ import annotations

import nacl.signing
import nkeys  # type: ignore[import-untyped]

__all__ = ["authorization", "new_user_seed", "public_key"]


def new_user_seed() -> bytes:
    """A fresh nkey user seed (``SU...``)."""
    return bytes(
        nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), nkeys.PREFIX_BYTE_USER)
    )


def public_key(seed: bytes) -> str:
    """The public key (``U...``) of ``seed``."""
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def authorization(*seeds: bytes) -> str:
    """A nats-server ``authorization`` block that admits exactly these users."""
    users = ", ".join(f'{{ nkey: "{public_key(s)}" }}' for s in seeds)
    return f"authorization {{ users = [ {users} ] }}"
