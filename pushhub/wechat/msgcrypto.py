"""WeChat's message crypto for 消息推送 (WXBizMsgCrypt), both directions.

- Signatures: SHA1 of the sorted, concatenated strings: ``[token, timestamp, nonce]`` for the URL check and
  plaintext pushes, plus the ``Encrypt`` text for ``msg_signature`` in safe mode.
- Encryption: key = base64decode(EncodingAESKey + "="), AES-256-CBC, IV = key[:16], PKCS#7 padding to a
  32-byte block (WeChat's choice, not AES's 16); the plaintext is 16 random bytes + the message length as 4
  bytes big-endian + the message + the AppID, and the AppID must be ours.

PushHub uses :func:`verify` and :func:`decrypt` (formids.events); the sandbox plays WeChat with
:func:`signature` and :func:`encrypt`. Errors are typed and their messages never carry a key or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_SIZE = 32  # WeChat pads to 32 bytes, not to AES's 16
RANDOM_PREFIX_SIZE = 16
AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")


class MsgCryptoError(Exception):
    """Base class. The message says what failed, never with which key or on what text."""


class InvalidAESKey(MsgCryptoError):
    """The EncodingAESKey is not 43 characters of [A-Za-z0-9] (32 bytes once decoded)."""


class DecryptError(MsgCryptoError):
    """The ciphertext is not base64, not whole AES blocks, badly padded or its length field is wrong."""


class AppIdMismatch(DecryptError):
    """The ciphertext decrypted, but it was made for another AppID."""


def signature(token: str, timestamp: str, nonce: str, *extra: str) -> str:
    """SHA1 hex of the sorted, concatenated strings (``extra``: the ``Encrypt`` text for msg_signature)."""
    parts = sorted([token, timestamp, nonce, *extra])
    return hashlib.sha1("".join(parts).encode()).hexdigest()


def verify(given: str | None, token: str, timestamp: str, nonce: str, *extra: str) -> bool:
    """Does ``given`` match the signature? Constant-time; a missing or non-text signature never matches."""
    if not isinstance(given, str) or not given:
        return False
    expected = signature(token, timestamp, nonce, *extra)
    return hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "replace"))


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key behind a 43-character EncodingAESKey."""
    if not isinstance(encoding_aes_key, str) or not AES_KEY_RE.match(encoding_aes_key):
        raise InvalidAESKey("EncodingAESKey must be 43 characters of [A-Za-z0-9]")
    return base64.b64decode(encoding_aes_key + "=")


def _cipher(key: bytes) -> Cipher:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def _pad(data: bytes) -> bytes:
    amount = BLOCK_SIZE - len(data) % BLOCK_SIZE  # 1..32: a whole block when already aligned
    return data + bytes([amount]) * amount


def _unpad(data: bytes) -> bytes:
    amount = data[-1] if data else 0
    if not 1 <= amount <= BLOCK_SIZE or amount > len(data) or data[-amount:] != bytes([amount]) * amount:
        raise DecryptError("bad padding")
    return data[:-amount]


def encrypt(
    message: str | bytes, appid: str, encoding_aes_key: str, random_prefix: bytes | None = None
) -> str:
    """The base64 ``Encrypt`` text WeChat would send for ``message`` to ``appid``.

    ``random_prefix`` (16 bytes) is only for reproducible test vectors; by default it is random.
    """
    key = aes_key(encoding_aes_key)
    body = message.encode() if isinstance(message, str) else message
    prefix = os.urandom(RANDOM_PREFIX_SIZE) if random_prefix is None else random_prefix
    if len(prefix) != RANDOM_PREFIX_SIZE:
        raise ValueError("random_prefix must be 16 bytes")
    plain = _pad(prefix + struct.pack(">I", len(body)) + body + appid.encode())
    encryptor = _cipher(key).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def decrypt(encrypted: str, encoding_aes_key: str, expected_appid: str) -> str:
    """The message inside an ``Encrypt`` text; raises unless it decrypts cleanly and names
    ``expected_appid``."""
    key = aes_key(encoding_aes_key)
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise DecryptError("not base64") from None
    if not raw or len(raw) % 16:
        raise DecryptError("not a whole number of AES blocks")
    decryptor = _cipher(key).decryptor()
    plain = _unpad(decryptor.update(raw) + decryptor.finalize())
    header = RANDOM_PREFIX_SIZE + 4
    if len(plain) < header:
        raise DecryptError("too short")
    (length,) = struct.unpack(">I", plain[RANDOM_PREFIX_SIZE:header])
    if header + length > len(plain):
        raise DecryptError("length field out of range")
    message, appid = plain[header : header + length], plain[header + length :]
    if not hmac.compare_digest(appid, expected_appid.encode()):
        raise AppIdMismatch("the message was encrypted for another AppID")
    try:
        return message.decode()
    except UnicodeDecodeError:
        raise DecryptError("message is not UTF-8") from None
