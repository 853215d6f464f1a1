"""Encryption at rest for tenant secrets (AppSecret, EncodingAESKey).

MultiFernet over FIELD_ENCRYPTION_KEY (comma-separated Fernet keys): the first key encrypts, every key
decrypts, so a key can be rotated by prepending a new one and re-encrypting (`manage.py rotate_field_key`).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    """A stored ciphertext could not be read with any configured key. Never carries the plaintext."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be one or more comma-separated Fernet keys "
            "(32 url-safe base64-encoded bytes; make one with `python -c 'from cryptography.fernet import "
            "Fernet; print(Fernet.generate_key().decode())'`)"
        ) from exc


def _keys() -> tuple[str, ...]:
    return tuple(settings.FIELD_ENCRYPTION_KEYS)


def encrypt(plaintext: str) -> str:
    return _fernet(_keys()).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet(_keys()).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "stored secret cannot be decrypted with the configured FIELD_ENCRYPTION_KEY"
        ) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the first (newest) key."""
    try:
        return _fernet(_keys()).rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "stored secret cannot be decrypted with the configured FIELD_ENCRYPTION_KEY"
        ) from None
