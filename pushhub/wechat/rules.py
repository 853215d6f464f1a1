"""WeChat's subscribe-message value rules and template-content parsing.

Shared by the sandbox (which answers 47003 exactly when these rules fail) and by PushHub's own trigger
validation (which refuses the same values up front with ``invalid_value``), so both always agree.
The rules are WeChat's published table (../../shared/WECHAT.md, "Subscribe message"), including the notes
under it: a *symbol* is any common character that is not Chinese, a letter or a digit; times may carry seconds;
dates may be written ``2019年10月1日``, ``2019年10月``, ``10月1日`` or joined by ``-``, ``/`` or ``.``; time
and date values may be ranges joined by ``~``. Key types not in the table (``short_thing``, ``enum`` …) are
accepted: WeChat judges them, we cannot.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["check_value", "key_type", "parse_template_fields"]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\.DATA\}\}")
_DATE_PATTERNS = [
    re.compile(r"(?P<y>\d{4})年(?P<m>\d{1,2})月(?:(?P<d>\d{1,2})日)?"),
    re.compile(r"(?P<m>\d{1,2})月(?P<d>\d{1,2})日"),
    re.compile(r"(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?:(?P=sep)(?P<d>\d{1,2}))?"),
    re.compile(r"(?P<m>\d{1,2})(?P<sep>[-/.])(?P<d>\d{1,2})"),
]
_TIME = re.compile(r"(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?")


def key_type(key: str) -> str:
    """The type of a template key is its letters: ``character_string12`` → ``character_string``."""
    return key.rstrip("0123456789")


def is_chinese(ch: str) -> bool:
    """CJK ideographs (basic block, extension A, compatibility and the supplementary planes)."""
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x3134F
    )


def _is_ascii_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def _is_ascii_digit(ch: str) -> bool:
    return ch.isascii() and ch.isdigit()


def _is_symbol(ch: str) -> bool:
    """WeChat: a symbol is a common character other than Chinese, letters and digits, never a control one."""
    if ch.isalnum() or is_chinese(ch):
        return False
    return unicodedata.category(ch)[0] != "C"


def _check_thing(value: str) -> str | None:
    return None if len(value) <= 20 else "longer than 20 characters"


def _check_number(value: str) -> str | None:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return "not a number"
    digits = sum(ch.isdigit() for ch in value)
    return None if digits <= 32 else "more than 32 digits"


def _check_letter(value: str) -> str | None:
    if not all(_is_ascii_letter(ch) for ch in value):
        return "only letters are allowed"
    return None if len(value) <= 32 else "more than 32 letters"


def _check_symbol(value: str) -> str | None:
    if not all(_is_symbol(ch) for ch in value):
        return "only symbols are allowed"
    return None if len(value) <= 5 else "more than 5 symbols"


def _check_character_string(value: str) -> str | None:
    if any(is_chinese(ch) for ch in value):
        return "Chinese characters are not allowed"
    if not all(_is_ascii_digit(ch) or _is_ascii_letter(ch) or _is_symbol(ch) for ch in value):
        return "only digits, letters and symbols are allowed"
    return None if len(value) <= 32 else "longer than 32 characters"


def _valid_date(match: re.Match) -> bool:
    parts = match.groupdict()
    month = int(parts["m"])
    day = int(parts["d"]) if parts.get("d") else 1
    return 1 <= month <= 12 and 1 <= day <= 31


def _valid_time(match: re.Match) -> bool:
    second = int(match["s"]) if match["s"] else 0
    return int(match["h"]) <= 23 and int(match["mi"]) <= 59 and second <= 59


def _is_date(text: str) -> bool:
    for pattern in _DATE_PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return _valid_date(match)
    return False


def _is_time(text: str) -> bool:
    match = _TIME.fullmatch(text)
    return bool(match) and _valid_time(match)


def _is_date_point(text: str) -> bool:
    """A date, optionally followed by a time: ``2019年10月1日`` or ``2019-10-01 15:01``."""
    date, _, time = text.partition(" ")
    return _is_date(date) and (not time or _is_time(time.strip()))


def _is_time_point(text: str) -> bool:
    """A time, optionally preceded by a date: ``15:01`` or ``2019年10月1日 15:01:30``."""
    if " " not in text:
        return _is_time(text)
    date, _, time = text.rpartition(" ")
    return _is_date(date.strip()) and _is_time(time)


def _check_range(value: str, is_point: Callable[[str], bool]) -> bool:
    """Time and date values may be one point or two joined by ``~``."""
    points = [point.strip() for point in value.split("~")]
    return len(points) <= 2 and all(point and is_point(point) for point in points)


def _check_time(value: str) -> str | None:
    return None if _check_range(value, _is_time_point) else "not a time like 15:01 or 2019年10月1日 15:01"


def _check_date(value: str) -> str | None:
    return None if _check_range(value, _is_date_point) else "not a date like 2019年10月1日"


def _check_amount(value: str) -> str | None:
    body = value.removesuffix("元")
    if body and unicodedata.category(body[0]) == "Sc":
        body = body[1:]
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", body):
        return "not an amount like ¥100.00 or 100元"
    digits = sum(ch.isdigit() for ch in body)
    return None if digits <= 10 else "more than 10 digits"


def _check_phone_number(value: str) -> str | None:
    if not all(_is_ascii_digit(ch) or _is_symbol(ch) for ch in value):
        return "only digits and symbols are allowed"
    return None if len(value) <= 17 else "longer than 17 characters"


def _check_car_number(value: str) -> str | None:
    if len(value) > 8:
        return "longer than 8 characters"
    inner_ok = all(ch.isascii() and ch.isalnum() for ch in value[1:-1])
    ends_ok = all((ch.isascii() and ch.isalnum()) or is_chinese(ch) for ch in (value[0], value[-1]))
    return None if inner_ok and ends_ok else "not a plate number like 粤A8Z888挂"


def _check_name(value: str) -> str | None:
    if any(ch.isdigit() for ch in value):
        return "digits are not allowed"
    if not all(is_chinese(ch) or _is_ascii_letter(ch) or _is_symbol(ch) for ch in value):
        return "only Chinese characters, letters and symbols are allowed"
    if any(is_chinese(ch) for ch in value):
        return None if len(value) <= 10 else "longer than 10 characters"
    return None if len(value) <= 20 else "longer than 20 letters"


def _check_phrase(value: str) -> str | None:
    if not all(is_chinese(ch) for ch in value):
        return "only Chinese characters are allowed"
    return None if len(value) <= 5 else "more than 5 Chinese characters"


_CHECKS: dict[str, Callable[[str], str | None]] = {
    "thing": _check_thing,
    "number": _check_number,
    "letter": _check_letter,
    "symbol": _check_symbol,
    "character_string": _check_character_string,
    "time": _check_time,
    "date": _check_date,
    "amount": _check_amount,
    "phone_number": _check_phone_number,
    "car_number": _check_car_number,
    "name": _check_name,
    "phrase": _check_phrase,
}


def check_value(key: str, value: str) -> str | None:
    """None when WeChat would accept ``value`` for template key ``key``, else a short reason.

    Empty values and newlines are refused for every type (WeChat: "可能为空或者不满足规则"); types WeChat
    does not document are otherwise accepted.
    """
    if value == "":
        return "is empty"
    if "\n" in value or "\r" in value:
        return "contains a newline"
    check = _CHECKS.get(key_type(key))
    return check(value) if check else None


def parse_template_fields(content: str) -> list[dict[str, str]]:
    """Fields of a WeChat template in content order: ``订单号:{{character_string1.DATA}}`` → key + name.

    The name is the text before the placeholder on its line, without a trailing ``:`` or ``：``
    (legacy formId templates often have no colon: ``购买地点{{keyword1.DATA}}``). A key listed twice counts once.
    """
    fields: list[dict[str, str]] = []
    seen: set[str] = set()
    start = 0
    for match in _PLACEHOLDER.finditer(content):
        label = content[start : match.start()].rsplit("\n", 1)[-1]
        start = match.end()
        key = match.group(1)
        if key in seen:
            continue
        seen.add(key)
        fields.append({"key": key, "name": label.strip().rstrip(":：").strip()})
    return fields
