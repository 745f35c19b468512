"""API keys: created once in plaintext, stored as SHA-256, checked in constant time.

A key looks like ``srg_<prefix>_<secret>``: the 12-hex-digit prefix finds the row without a
scan (and is safe to show in listings and logs); the 256-bit secret makes a plain SHA-256
enough (no slow KDF is needed for high-entropy random keys, unlike passwords).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import write
from app.errors import FieldError, Invalid, Unauthorized
from app.models import ApiKey, utcnow

KEY_SCHEME = "srg"
LOCAL_OWNER = "local"  # the owner of every request when settings.auth is False


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, owner: str) -> str:
    """Create a key for ``owner`` and return its plaintext: the only time it is available."""
    owner = owner.strip()
    if not owner or len(owner) > 200:
        raise Invalid([FieldError("owner", "must be 1 to 200 characters")])
    prefix = secrets.token_hex(6)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(owner=owner, prefix=prefix, key_hash=_digest(key), created_at=utcnow()))
    session.flush()
    return key


def authenticate(session: Session, key: str) -> str:
    """The owner of a valid, unrevoked key; Unauthorized (one message for every failure)."""
    parts = key.split("_", 2)
    if len(parts) == 3 and parts[0] == KEY_SCHEME:
        row = session.execute(  # two columns, no ORM object: this runs on every request
            select(ApiKey.owner, ApiKey.key_hash).where(
                ApiKey.prefix == parts[1], ApiKey.revoked_at.is_(None)
            )
        ).first()
        if row is not None and hmac.compare_digest(row.key_hash, _digest(key)):
            return row.owner
    raise Unauthorized("invalid or revoked API key")


def revoke_api_key(session: Session, prefix: str) -> bool:
    """Revoke the key with this prefix; False when there is no such active key."""
    revoked = write(
        session,
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow()),
    )
    return revoked == 1
