"""The open-tracking reference a sent message's page carries (``ph=<ref>``, ../shared/API.md "Opens and the
in-app inbox"): the delivery's id, with a MAC so refs can't be enumerated or forged.

A ref is computed, not stored: ``mac`` (6 base-36 characters of an HMAC-SHA256 of the id under a key derived
from SECRET_KEY) followed by the id in base 36, at most 16 characters for ids below 36**10. Nothing is written
per delivery to make one, and a malformed or forged ref is refused without touching the database.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from functools import lru_cache

from django.conf import settings

MAX_REF = 16
QUERY_NAME = "ph"
_MAC_LEN = 6
_DIGITS = string.digits + string.ascii_lowercase


def _key() -> bytes:
    return _key_for(settings.SECRET_KEY)


@lru_cache(maxsize=4)
def _key_for(secret_key: str) -> bytes:
    # derived once, not per ref: the send path makes one ref per delivery
    return hashlib.sha256(b"pushhub.opens.ref:" + secret_key.encode()).digest()


def _base36(n: int) -> str:
    out = []
    while True:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
        if not n:
            return "".join(reversed(out))


def _mac(id_text: str) -> str:
    digest = hmac.digest(_key(), id_text.encode(), "sha256")  # one-shot: no HMAC object per delivery
    return _base36(int.from_bytes(digest[:8], "big")).rjust(_MAC_LEN, "0")[-_MAC_LEN:]


def make_ref(delivery_id: int) -> str:
    """The ref of a delivery (deterministic: the same id always gives the same ref)."""
    id_text = _base36(int(delivery_id))
    return _mac(id_text) + id_text


def parse_ref(ref) -> int | None:
    """The delivery id a ref names, or None for anything malformed or forged."""
    if not isinstance(ref, str) or not (_MAC_LEN < len(ref) <= MAX_REF):
        return None
    if any(ch not in _DIGITS for ch in ref):
        return None
    mac, id_text = ref[:_MAC_LEN], ref[_MAC_LEN:]
    if id_text.startswith("0") or not hmac.compare_digest(mac, _mac(id_text)):
        return None
    return int(id_text, 36)


def page_with_ref(page: str, ref: str, max_length: int) -> str:
    """``page`` with ``ph=<ref>`` appended (``?`` or ``&``), keeping the page's own query. A page that would
    pass ``max_length`` (WeChat's limit) is sent as it was: the open is then not tracked, the send still is."""
    if not page:
        return page
    joiner = "&" if "?" in page else "?"
    if page.endswith(("?", "&")):
        joiner = ""
    tracked = f"{page}{joiner}{QUERY_NAME}={ref}"
    return tracked if len(tracked) <= max_length else page
