"""pushhub.wechat.msgcrypto against WeChat's scheme written out independently here (hashlib + AES-CBC)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pushhub.wechat import msgcrypto

APPID = "wx0123456789abcdef"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, as WeChat's docs show
PREFIX = b"RANDOMRANDOM1234"


def wx_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _aes(encoding_aes_key: str) -> Cipher:
    key = base64.b64decode(encoding_aes_key + "=")
    assert len(key) == 32
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def wx_encrypt(message: str, appid: str, encoding_aes_key: str, prefix: bytes = PREFIX) -> str:
    body = message.encode()
    plain = prefix + struct.pack(">I", len(body)) + body + appid.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = _aes(encoding_aes_key).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def wx_decrypt(encrypted: str, encoding_aes_key: str) -> tuple[bytes, str, str]:
    """(random prefix, message, appid)."""
    decryptor = _aes(encoding_aes_key).decryptor()
    plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    pad = plain[-1]
    assert 1 <= pad <= 32 and plain[-pad:] == bytes([pad]) * pad
    plain = plain[:-pad]
    (length,) = struct.unpack(">I", plain[16:20])
    return plain[:16], plain[20 : 20 + length].decode(), plain[20 + length :].decode()


def random_key() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))


# --- signatures ------------------------------------------------------------------------------------
def test_the_signature_is_sha1_of_the_sorted_strings():
    assert msgcrypto.signature("pamtest", "1409304348", "xxxxxx") == wx_signature(
        "pamtest", "1409304348", "xxxxxx"
    )
    assert msgcrypto.signature("tok", "1", "2", "ENCRYPTED") == wx_signature("ENCRYPTED", "2", "1", "tok")


def test_a_known_signature_vector():
    # sha1("1409304348" + "pamtest" + "xxxxxx"): the strings sorted, then joined
    assert (
        msgcrypto.signature("pamtest", "1409304348", "xxxxxx")
        == hashlib.sha1(b"1409304348pamtestxxxxxx").hexdigest()
    )


def test_verify_accepts_only_the_right_signature():
    good = wx_signature("tok", "1700000000", "42", "ENC")
    assert msgcrypto.verify(good, "tok", "1700000000", "42", "ENC")
    assert msgcrypto.verify(good.upper(), "tok", "1700000000", "42", "ENC")
    assert not msgcrypto.verify(good, "tok", "1700000001", "42", "ENC")
    assert not msgcrypto.verify(good, "other", "1700000000", "42", "ENC")
    assert not msgcrypto.verify(good, "tok", "1700000000", "42")
    assert not msgcrypto.verify(None, "tok", "1700000000", "42")
    assert not msgcrypto.verify("", "tok", "1700000000", "42")
    assert not msgcrypto.verify("签名", "tok", "1700000000", "42")


# --- encryption ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        '{"ToUserName":"gh_1","FromUserName":"oUser","CreateTime":1,"MsgType":"event"}',
        "<xml><Content><![CDATA[你好，世界]]></Content></xml>",
        "",
        "x" * 1000,
    ],
)
def test_it_decrypts_what_wechat_encrypts(message):
    assert msgcrypto.decrypt(wx_encrypt(message, APPID, KEY), KEY, APPID) == message


@pytest.mark.parametrize("length", range(0, 70))
def test_padding_fills_32_byte_blocks_for_every_length(length):
    message = "m" * length
    encrypted = msgcrypto.encrypt(message, APPID, KEY, random_prefix=PREFIX)
    assert encrypted == wx_encrypt(message, APPID, KEY)  # byte for byte what WeChat would send
    assert len(base64.b64decode(encrypted)) % 32 == 0
    assert msgcrypto.decrypt(encrypted, KEY, APPID) == message


def test_what_it_encrypts_wechat_decrypts():
    key = random_key()
    encrypted = msgcrypto.encrypt("订阅消息 ✓", APPID, key)
    prefix, message, appid = wx_decrypt(encrypted, key)
    assert (message, appid) == ("订阅消息 ✓", APPID)
    assert len(prefix) == 16
    assert wx_decrypt(msgcrypto.encrypt("订阅消息 ✓", APPID, key), key)[0] != prefix  # random every time


def test_another_appid_inside_is_refused():
    with pytest.raises(msgcrypto.AppIdMismatch):
        msgcrypto.decrypt(wx_encrypt("{}", "wxffffffffffffffff", KEY), KEY, APPID)


def test_a_prefix_of_our_appid_is_not_our_appid():
    with pytest.raises(msgcrypto.AppIdMismatch):
        msgcrypto.decrypt(wx_encrypt("{}", APPID[:-1], KEY), KEY, APPID)


def test_another_key_does_not_decrypt():
    encrypted = wx_encrypt('{"a": 1}', APPID, random_key())
    with pytest.raises(msgcrypto.DecryptError):
        msgcrypto.decrypt(encrypted, KEY, APPID)


@pytest.mark.parametrize(
    "encrypted",
    [
        "not base64!!",
        "",
        base64.b64encode(b"short").decode(),  # not whole AES blocks
        base64.b64encode(b"\x00" * 32).decode(),  # decrypts to garbage: bad padding
    ],
)
def test_garbage_is_a_decrypt_error(encrypted):
    with pytest.raises(msgcrypto.DecryptError):
        msgcrypto.decrypt(encrypted, KEY, APPID)


def test_a_truncated_ciphertext_is_a_decrypt_error():
    raw = base64.b64decode(wx_encrypt("x" * 100, APPID, KEY))
    with pytest.raises(msgcrypto.DecryptError):
        msgcrypto.decrypt(base64.b64encode(raw[:-32]).decode(), KEY, APPID)


def test_a_length_field_beyond_the_end_is_a_decrypt_error():
    plain = PREFIX + struct.pack(">I", 10_000) + b"{}" + APPID.encode()
    pad = 32 - len(plain) % 32
    encryptor = _aes(KEY).encryptor()
    raw = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    with pytest.raises(msgcrypto.DecryptError):
        msgcrypto.decrypt(base64.b64encode(raw).decode(), KEY, APPID)


@pytest.mark.parametrize("key", ["short", KEY + "A", KEY[:-1] + "+", "", None])
def test_a_malformed_aes_key_is_refused(key):
    with pytest.raises(msgcrypto.InvalidAESKey):
        msgcrypto.encrypt("{}", APPID, key)


def test_errors_never_show_the_key_or_the_text():
    secret_text = "SECRET-PLAINTEXT-openid"
    other_key = random_key()
    for call in (
        lambda: msgcrypto.decrypt(wx_encrypt(secret_text, "wxffffffffffffffff", other_key), other_key, APPID),
        lambda: msgcrypto.decrypt(wx_encrypt(secret_text, APPID, other_key), KEY, APPID),
        lambda: msgcrypto.aes_key(other_key + "!"),
    ):
        with pytest.raises(msgcrypto.MsgCryptoError) as caught:
            call()
        text = str(caught.value) + repr(caught.value)
        assert other_key not in text and KEY not in text and secret_text not in text
