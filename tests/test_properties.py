"""Property tests (hypothesis): send-payload validation, the credit claim service and segment membership.

Validation (``templates_app.pushes.request.parse_send_request``): for any JSON a tenant can send, the answer is a
parsed request or the contract's 400 (``validation_error``, ``missing_field``, ``unknown_field``,
``invalid_value``) naming the input at fault, never another exception; and what is accepted obeys WeChat's
value rules, checked here against oracles written from ../shared/WECHAT.md, not from ``rules.py``.

Claims (``formids.services.claim_credits`` / ``release``), on the real database (PostgreSQL's one-statement
path in CI, the guarded per-user path on SQLite): for any pool of credits (several users, kinds, templates,
expiries, states, another app's credits under the same openids) and any recipient list, a claim gives each
recipient exactly the credit the rules say (their soonest-to-expire usable formId/prepay_id, or their oldest
credit for the subscribe template), nothing to anyone else, and changes nothing else; a second,
overlapping claim never gets a credit the first holds; releasing gives exactly those credits back.

Segments (``to: {"tags": {"all", "any", "none"}}``), on the real database: for any users × tags (another app's
users with the same tags too), credits, opt-outs and segment, the dry run counts and the workers' enumeration
selects exactly the users a brute-force evaluation of all/any/none picks.
"""

from __future__ import annotations

import json
import re
import string
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from formids import services
from formids.models import Credit
from pushhub.api import ApiError
from templates_app.models import Template
from templates_app.pushes.request import (
    REQUEST_FIELDS,
    SEND_AT_MAX_AHEAD,
    SEND_AT_SKEW,
    SendRequest,
    parse_send_request,
)
from tenants import services as tenant_services
from tests.conftest import random_appid, random_secret

NOW = datetime(2026, 11, 24, 8, 0, 0, 123456, tzinfo=UTC)
CONTRACT_CODES = {"validation_error", "missing_field", "unknown_field", "invalid_value"}
COLOR = re.compile(r"#[0-9a-fA-F]{6}")

FORMID = Template(
    kind="formid",
    template_id="TPL_FORM",
    fields=[{"key": f"keyword{n}", "name": ""} for n in (1, 2, 3)],
    page="pages/order",
)
SUBSCRIBE_KEYS = [
    "thing1",
    "number2",
    "letter3",
    "phrase4",
    "character_string5",
    "time6",
    "date7",
    "amount8",
    "short_thing9",  # a type WeChat does not document: anything but empty or multi-line is let through
]
SUBSCRIBE = Template(
    kind="subscribe", template_id="TPL_SUB", fields=[{"key": k, "name": ""} for k in SUBSCRIBE_KEYS]
)
fast = hypothesis_settings(max_examples=300, deadline=None, derandomize=True, database=None)


def parse(template: Template, body) -> SendRequest | ApiError:
    try:
        return parse_send_request(template, body, now=NOW)
    except ApiError as error:
        return error


# --- WeChat's value rules, per key type ------------------------------------------------------------------
# Values built to be accepted (GOOD) or refused (BAD) by WeChat, per WECHAT.md, whatever rules.py says.
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
ASCII_LETTERS = st.sampled_from(string.ascii_letters)
DIGITS = st.sampled_from(string.digits)
no_newline = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r")


def valid(strategy):
    return strategy.map(lambda v: (True, v))


def invalid(strategy):
    return strategy.map(lambda v: (False, v))


def _digits(min_size, max_size):
    return st.text(DIGITS, min_size=min_size, max_size=max_size)


def _number(max_digits, min_digits=1):
    """A decimal with ``min_digits`` to ``max_digits`` digits in all: 123 or 12.5."""
    return (
        st.integers(min_digits, max_digits)
        .flatmap(lambda n: st.tuples(_digits(n, n), st.integers(0, n - 1)))
        .map(lambda t: t[0] if t[1] == 0 else f"{t[0][: -t[1]]}.{t[0][-t[1] :]}")
    )


def _time():
    return st.builds(
        lambda h, m, s: f"{h}:{m:02d}" + (f":{s:02d}" if s is not None else ""),
        st.integers(0, 23),
        st.integers(0, 59),
        st.none() | st.integers(0, 59),
    )


def _date():
    return st.builds(
        lambda y, m, d, style: [f"{y}年{m}月{d}日", f"{y}-{m:02d}-{d:02d}", f"{m}月{d}日"][style],
        st.integers(1000, 9999),
        st.integers(1, 12),
        st.integers(1, 31),
        st.integers(0, 2),
    )


GOOD = {  # values WeChat accepts, per key type
    "thing": st.text(no_newline, min_size=1, max_size=20),
    "number": _number(32) | st.integers(0, 10**32 - 1),
    "letter": st.text(ASCII_LETTERS, min_size=1, max_size=32),
    "phrase": st.text(CJK, min_size=1, max_size=5),
    "character_string": st.text(
        st.sampled_from(string.ascii_letters + string.digits), min_size=1, max_size=32
    ),
    "time": _time() | st.tuples(_date(), _time()).map(" ".join) | st.tuples(_time(), _time()).map("~".join),
    "date": _date(),
    "amount": st.tuples(st.sampled_from(["¥", "$", "€", ""]), _number(10)).map("".join)
    | _number(10).map(lambda v: v + "元"),
    "short_thing": st.text(no_newline, min_size=1, max_size=10)
    | st.text(no_newline, min_size=40, max_size=60),
}
BAD = {  # and values it refuses
    "thing": st.text(no_newline, min_size=21, max_size=40) | st.just(""),
    "number": _number(40, min_digits=33)
    | st.integers(max_value=-1)
    | st.sampled_from(["1e5", "1.", ".5", "1,000", "½", "١٢", "NaN", "12a"]),
    "letter": st.text(ASCII_LETTERS, min_size=33, max_size=40)
    | st.tuples(st.text(ASCII_LETTERS, max_size=5), DIGITS).map("".join),
    "phrase": st.text(CJK, min_size=6, max_size=8)
    | st.tuples(st.text(CJK, max_size=3), ASCII_LETTERS).map("".join),
    "character_string": st.text(st.sampled_from(string.ascii_letters), min_size=33, max_size=40)
    | st.tuples(st.text(ASCII_LETTERS, max_size=5), CJK).map("".join),
    "time": st.builds(lambda h, m: f"{h}:{m:02d}", st.integers(24, 99), st.integers(0, 59))
    | st.builds(lambda h, m: f"{h}:{m}", st.integers(0, 23), st.integers(60, 99))
    | st.sampled_from(["下午三点", "15.01", "15:01~16:00~17:00", "1501"]),
    "date": st.builds(lambda y, m: f"{y}年{m}月1日", st.integers(1000, 9999), st.integers(13, 99))
    | st.sampled_from(["tomorrow", "2019年", "2019-10-01-02"]),
    "amount": _number(16, min_digits=11) | st.sampled_from(["¥¥1", "1元元", "元", "¥"]),
    "short_thing": st.sampled_from(["", "a\nb"]),
}
# Not a string or a number, or over several lines: refused whatever the type.
NOT_TEXT = st.none() | st.booleans() | st.lists(st.integers(), max_size=2)
NEVER = NOT_TEXT | st.sampled_from(["x\ny", "x\r"])


GOOD_COLORS = st.sampled_from(["#173177", "#FF0000", "#a0b0c0"])
BAD_COLORS = st.sampled_from(["red", "#12345", "#1234567", "#GGGGGG", ""])


@st.composite
def subscribe_data(draw, bad_key: str | None):
    """{key: (valid, value as sent, field a refusal names)}: good values before ``bad_key``, a bad one there
    (a bad value, or a good one with a bad color), anything after it; values sent as they are or as
    {"value", "color"}."""
    values = {}
    for key in SUBSCRIBE_KEYS:
        kind = key.rstrip("0123456789")
        after = bad_key is not None and SUBSCRIBE_KEYS.index(key) > SUBSCRIBE_KEYS.index(bad_key)
        how = "bad" if key == bad_key else draw(st.sampled_from(["good", "bad"])) if after else "good"
        if how == "bad":
            how = draw(st.sampled_from(["bad value", "bad value", "not text", "bad color"]))
        color = draw(st.none() | GOOD_COLORS)
        if how == "bad color":
            value = {"value": draw(GOOD[kind]), "color": draw(BAD_COLORS)}
            values[key] = (False, value, f"data.{key}.color")
            continue
        value = draw({"good": GOOD[kind], "bad value": BAD[kind], "not text": NEVER}[how])
        values[key] = (
            how == "good",
            value if color is None else {"value": value, "color": color},
            f"data.{key}",
        )
    return values


@pytest.mark.parametrize("bad_key", [None, *SUBSCRIBE_KEYS])
@hypothesis_settings(fast, max_examples=60)
@given(data=st.data())
def test_subscribe_values_are_accepted_exactly_when_wechats_rules_allow(bad_key, data):
    values = data.draw(subscribe_data(bad_key), label="values")
    body = {"to": "oAlice", "data": {key: sent for key, (_, sent, _) in values.items()}}
    result = parse(SUBSCRIBE, body)
    refused = [values[key][2] for key in SUBSCRIBE_KEYS if not values[key][0]]
    if not refused:
        assert isinstance(result, SendRequest), result.payload()
        for key, (_, sent, _) in values.items():
            raw = sent["value"] if isinstance(sent, dict) else sent
            assert result.data[key]["value"] == (raw if isinstance(raw, str) else str(raw))
            assert result.data[key].get("color") == (sent.get("color") if isinstance(sent, dict) else None)
    else:  # the first bad field in the template's order is the one named
        assert isinstance(result, ApiError)
        assert (result.code, result.field) == ("invalid_value", refused[0])


def test_every_value_empty_is_refused_at_the_first_field():
    result = parse(SUBSCRIBE, {"to": "oAlice", "data": dict.fromkeys(SUBSCRIBE_KEYS, "")})
    assert (result.code, result.field) == ("invalid_value", "data.thing1")


@fast
@given(
    st.lists(
        valid(st.text(max_size=200) | st.integers() | st.floats(allow_nan=False, allow_infinity=False))
        | invalid(st.text(min_size=201, max_size=230))
        | invalid(NOT_TEXT),
        min_size=3,
        max_size=3,
    )
)
def test_formid_values_are_any_text_up_to_200_characters_or_a_number(values):
    body = {"to": ["oAlice"], "data": [value for _, value in values]}  # the array form, in field order
    result = parse(FORMID, body)
    refused = [f"data.keyword{n}" for n, (ok, _) in enumerate(values, 1) if not ok]
    if refused:
        assert (result.code, result.field) == ("invalid_value", refused[0])
    else:
        assert [field["value"] for field in result.data.values()] == [
            v if isinstance(v, str) else str(v) for _, v in values
        ]


@fast
@given(
    given_keys=st.lists(
        st.sampled_from(["keyword1", "keyword2", "keyword3", "keyword4", "thing1"]), unique=True
    ),
    as_list=st.integers(0, 5),
)
def test_data_must_give_exactly_the_templates_fields(given_keys, as_list):
    if as_list:  # the array form: values in field order
        data = ["x"] * (as_list - 1)
        result = parse(FORMID, {"to": "oAlice", "data": data})
        if len(data) > 3:
            assert (result.code, result.field) == ("unknown_field", "data[3]")
        elif len(data) < 3:
            assert (result.code, result.field) == ("missing_field", f"data.keyword{len(data) + 1}")
        else:
            assert isinstance(result, SendRequest)
        return
    result = parse(FORMID, {"to": "oAlice", "data": dict.fromkeys(given_keys, "x")})
    unknown = [k for k in given_keys if k not in FORMID.keys]
    missing = [k for k in FORMID.keys if k not in given_keys]
    if unknown:
        assert (result.code, result.field) == ("unknown_field", f"data.{unknown[0]}")
    elif missing:
        assert (result.code, result.field) == ("missing_field", f"data.{missing[0]}")
    else:
        assert isinstance(result, SendRequest)


# --- send_at ----------------------------------------------------------------------------------------
@st.composite
def times(draw):
    """(what it means, or None if nothing, text): an ISO-8601 time near NOW or anywhere, each part possibly
    out of its range."""
    base = draw(
        st.datetimes(min_value=datetime(2026, 11, 20), max_value=datetime(2027, 3, 31))
        | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
    )
    parts = [base.year, base.month, base.day, base.hour, base.minute, base.second]
    if draw(st.booleans()):
        index = draw(st.integers(0, 5))
        parts[index] = draw(st.integers(0, 9999 if index == 0 else 99))
    zone = draw(
        st.sampled_from(["Z", "", "+08:00", "-05:30"])
        | st.builds("+{:02d}:{:02d}".format, st.integers(0, 30), st.integers(0, 59))
    )
    text = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*parts) + zone
    try:
        when = datetime(*parts, tzinfo=UTC)
    except ValueError:
        return None, text
    if zone == "":
        return None, text  # no time zone: refused
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        if offset >= timedelta(hours=24):
            return None, text
        try:
            when -= sign * offset
        except OverflowError:
            return None, text
    return when, text


@fast
@given(times())
@example((None, "2026-02-30T01:00:00Z"))  # well formed, not a day: was a 500 (ValueError) before the fix
@example((None, "2026-12-01T24:00:00Z"))
def test_send_at_is_a_time_in_the_next_90_days_or_a_400(meaning):
    when, text = meaning
    result = parse(FORMID, {"to": "oAlice", "data": ["a", "b", "c"], "send_at": text})
    event("accepted" if isinstance(result, SendRequest) else "refused")
    if when is None or not NOW - SEND_AT_SKEW <= when <= NOW + SEND_AT_MAX_AHEAD:
        assert (result.code, result.field) == ("validation_error", "send_at")
    else:
        assert isinstance(result, SendRequest), result.payload()
        assert result.send_at == (when if when > NOW else None)


# --- any JSON ------------------------------------------------------------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()  # NaN and ±Infinity too: Python's json (the trigger URL) parses them
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)
junk_openids = st.sampled_from(["", "@all", "@tag:vip", "o" * 65]) | st.text(max_size=70)
good_tags = st.sampled_from(["vip", "city:shanghai", "abandoned-cart", "v1.2_x", "T" * 64])
junk_tags = st.sampled_from(["", "vip\n", "has space", "城市", "t" * 65, "@tag:vip"]) | st.text(max_size=70)
segments = st.fixed_dictionaries(
    {},
    optional={key: st.lists(good_tags, max_size=3) for key in ("all", "any", "none")},
)
junk_segments = st.dictionaries(
    st.sampled_from(["all", "any", "none", "some"]),
    st.lists(good_tags | junk_tags, max_size=3) | st.lists(good_tags, min_size=21, max_size=22) | json_values,
    max_size=3,
)
good_aliases = st.lists(st.sampled_from(["u1", "user-2", "a" * 128, "李雷 ", "@x"]), min_size=1, max_size=4)
junk_aliases = st.lists(st.sampled_from(["", "a" * 129]) | json_scalars, min_size=1, max_size=3)
TAG_ORACLE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # API.md: ^[A-Za-z0-9_.:-]{1,64}$, the whole string
TO_FIELD = re.compile(r"to((\.(aliases|tags|all|any|none))|\[\d+\])*")


def good_value(template: Template, key: str):
    if template.kind == "formid":
        return st.text(max_size=30) | st.integers()
    return GOOD[key.rstrip("0123456789")]


def send_bodies(template: Template):
    """Send bodies from right to wrong, part by part, so that refusals come from every check, not only the
    first one (``to``), and some bodies are accepted."""
    values = st.fixed_dictionaries({key: good_value(template, key) for key in template.keys})
    good_to = (
        st.sampled_from(["oAlice", "@all"])
        | st.lists(st.sampled_from(["oAlice", "oBob", "o" * 64]), min_size=1, max_size=4)
        | st.fixed_dictionaries({"aliases": good_aliases})
        | st.fixed_dictionaries({"tags": segments})
    )
    good = {
        "to": good_to,
        "data": values | values.map(lambda d: [d[k] for k in template.keys]),
        "page": st.sampled_from(["", "pages/order?id=1", "/pages/index"]),
        "emphasis_keyword": st.sampled_from(["", "keyword2.DATA"]),
        "miniprogram_state": st.sampled_from(["formal", "trial", "developer"]),
        "lang": st.sampled_from(["zh_CN", "en_US"]),
        "send_at": times().map(lambda meaning: meaning[1]),
        "force": st.booleans(),
    }
    wrong = {
        "to": junk_openids
        | st.lists(junk_openids, max_size=3)
        | json_values
        | st.fixed_dictionaries({"aliases": junk_aliases | json_values})
        | st.fixed_dictionaries({"tags": junk_segments | json_values})
        | st.fixed_dictionaries({"aliases": good_aliases, "tags": segments}),
        "data": st.dictionaries(
            st.sampled_from([*template.keys, "keyword4", "thing1"]) | st.text(max_size=8),
            json_values,
            max_size=6,
        )
        | st.lists(json_values, max_size=5)
        | json_values,
        "page": st.sampled_from(["pages/a b", "p" * 1025]) | json_values,
        "emphasis_keyword": st.sampled_from(["keyword9.DATA", "thing1.DATA"]) | json_values,
        "miniprogram_state": st.sampled_from(["prod"]) | json_values,
        "lang": st.sampled_from(["fr_FR"]) | json_values,
        "send_at": st.text(max_size=30) | json_values,
        "force": json_values,
    }
    right = {name: strategy for name, strategy in good.items() if name in ("to", "data")}
    body = st.fixed_dictionaries(
        {name: st.one_of(strategy, strategy, strategy, wrong[name]) for name, strategy in right.items()},
        optional={name: st.one_of(good[name], good[name], wrong[name]) for name in good if name not in right},
    )
    extra = st.dictionaries(st.text(max_size=10), json_values, max_size=2)
    return body | st.tuples(body, extra).map(lambda pair: {**pair[1], **pair[0]}) | json_values


@pytest.mark.parametrize("template", [FORMID, SUBSCRIBE], ids=["formid", "subscribe"])
@fast
@given(data=st.data())
def test_any_json_is_parsed_or_refused_with_the_contracts_400(template, data):
    body = data.draw(send_bodies(template), label="body")
    result = parse(template, body)
    event("accepted" if isinstance(result, SendRequest) else f"{result.code}: {result.field}"[:32])
    if isinstance(result, ApiError):
        assert result.status_code == 400
        assert result.code in CONTRACT_CODES
        payload = result.payload()["error"]
        assert isinstance(payload["message"], str) and payload["message"]
        assert set(payload) <= {"code", "message", "field"}
        if "field" in payload:
            assert isinstance(payload["field"], str) and payload["field"]
            if payload["field"] == "to" or payload["field"].startswith(
                ("to.", "to[")
            ):  # not an unknown "to0"
                assert result.code == "validation_error"
                check_to_field(body["to"] if "to" in body else None, payload["field"])
            if isinstance(body, dict) and payload["field"] in body and payload["field"] not in REQUEST_FIELDS:
                assert result.code == "validation_error"  # an unknown field
        json.dumps(result.payload())  # what the API answers: always serialisable
        return
    # Accepted: the request as delivery will use it.
    assert isinstance(body, dict) and set(body) <= set(REQUEST_FIELDS)
    assert list(result.data) == template.keys
    for key, field in result.data.items():
        assert set(field) <= {"value", "color"} and isinstance(field["value"], str)
        assert "color" not in field or COLOR.fullmatch(field["color"])
        raw = body["data"][key] if isinstance(body["data"], dict) else body["data"][template.keys.index(key)]
        raw = raw["value"] if isinstance(raw, dict) else raw
        assert field["value"] == (raw if isinstance(raw, str) else str(raw))
    check_to(body["to"], result.to)
    assert not any(c.isspace() for c in result.page) and not result.page.startswith("/")
    assert isinstance(result.force, bool)


def check_to(to, got) -> None:
    """An accepted ``to``, against the contract's rules (API.md "Sending", "Sending to an audience")."""
    if to == "@all":
        assert got.audience == "all"
    elif isinstance(to, dict) and "aliases" in to:
        assert set(to) == {"aliases"} and got.audience == "aliases"
        assert 0 < len(to["aliases"]) <= 1000
        assert got.names == tuple(dict.fromkeys(to["aliases"]))
        assert all(isinstance(a, str) and 0 < len(a) <= 128 for a in got.names)
    elif isinstance(to, dict):
        assert set(to) == {"tags"} and got.audience == "tags"
        assert set(to["tags"]) <= {"all", "any", "none"}
        lists = (got.segment.all_of, got.segment.any_of, got.segment.none_of)
        for key, tags in zip(("all", "any", "none"), lists, strict=True):
            assert len(to["tags"].get(key, [])) <= 20
            assert tags == tuple(dict.fromkeys(to["tags"].get(key, [])))
            assert all(TAG_ORACLE.fullmatch(tag) for tag in tags)
        assert got.segment.all_of or got.segment.any_of
    else:
        sent = [to] if isinstance(to, str) else to
        assert got.audience == "openids"
        assert got.names == tuple(dict.fromkeys(sent)) and got.names
        assert all(isinstance(o, str) and 0 < len(o) <= 64 and not o.startswith("@") for o in got.names)


def check_to_field(to, field: str) -> None:
    """A refused ``to`` names the input at fault: a path into the body (``to.tags.any[0]``), or an unknown key
    of one of its objects."""
    if field == "to":
        return
    if not TO_FIELD.fullmatch(field):  # an unknown key: to.<key> or to.tags.<key>
        parent, key = ("tags", field[len("to.tags.") :]) if field.startswith("to.tags.") else ("", field[3:])
        where = to["tags"] if parent else to
        assert isinstance(where, dict) and key in where, field
        assert key not in (("all", "any", "none") if parent else ("aliases", "tags")), field
        return
    node = [to] if isinstance(to, str) else to  # one openid is a list of one
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", field[2:]):
        if name:
            assert isinstance(node, dict) and name in node, field
            node = node[name]
        else:
            assert isinstance(node, list) and int(index) < len(node), field
            node = node[int(index)]


# --- claims ------------------------------------------------------------------------------------------
OPENIDS = ["oUser0", "oUser1", "oUser2"]
HOURS = timedelta(hours=1)

credit_rows = st.lists(
    st.fixed_dictionaries(
        {
            "user": st.sampled_from(OPENIDS),
            "other_app": st.sampled_from([False] * 4 + [True]),  # same openid, another tenant's app
            "kind": st.sampled_from(["formid", "subscribe", "prepay", "subscribe"]),
            "template_id": st.sampled_from(["T1", "T1", "T1", "T2"]),
            # from 2 days ago to 7 days ahead, on the half hour (away from the clock's edge), ties included;
            # 0.5 h is inside the expiry margin (1 h)
            "expires_in": st.sampled_from([24, 100, 0, 1, 2, 5, 23, 71, 167, -1, -47]).map(
                lambda h: (h + 0.5) * HOURS
            ),
            "state": st.sampled_from(["available"] * 5 + ["claimed", "consumed", "expired"]),
        }
    ),
    min_size=4,
    max_size=30,
)
recipients = st.lists(st.sampled_from([*OPENIDS, *OPENIDS, "oNobody", "@all"]), min_size=1, max_size=6)


@pytest.fixture
def two_apps(tenant, other_tenant):
    ours = tenant_services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Ours", sandbox_app=True
    )
    theirs = tenant_services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Theirs", sandbox_app=True
    )
    return ours, theirs


def seed(two_apps, rows, now):
    ours, theirs = two_apps
    users = {}
    for app in two_apps:
        for openid in OPENIDS:
            users[app.pk, openid] = services.touch_user(app, openid)
    credits = []
    for n, row in enumerate(rows):
        app = theirs if row["other_app"] else ours
        subscribe = row["kind"] == "subscribe"
        credits.append(
            Credit(
                app=app,
                user=users[app.pk, row["user"]],
                kind=row["kind"],
                value="" if subscribe else f"credit{n:010d}",
                template_id=row["template_id"] if subscribe else "",
                uses_left=0 if row["state"] == "consumed" else 3 if row["kind"] == "prepay" else 1,
                expires_at=None if subscribe else now + row["expires_in"],
                state=row["state"],
                claimed_at=now - HOURS if row["state"] == "claimed" else None,
                claimed_by="someone-else" if row["state"] == "claimed" else "",
            )
        )
    Credit.objects.bulk_create(credits)
    return ours


def pool() -> dict[int, tuple]:
    """Every credit of both apps: (app, openid, kind, template, expiry, state, holder, uses left,
    claimed at)."""
    return {
        c.pk: (
            c.app_id,
            c.user.openid,
            c.kind,
            c.template_id,
            c.expires_at,
            c.state,
            c.claimed_by,
            c.uses_left,
            c.claimed_at,
        )
        for c in Credit.objects.select_related("user")
    }


def best(snapshot, app, openid, kind, template_id, now) -> int | None:
    """What the rules say ``openid`` gets: the soonest-to-expire usable formId/prepay_id (ties: the older),
    or the oldest available credit for the subscribe template."""
    usable_after = now + timedelta(seconds=settings.FORMID_EXPIRY_MARGIN)
    candidates = [
        (expires or datetime.max.replace(tzinfo=UTC), pk)
        for pk, (app_id, user, k, tid, expires, state, *_) in snapshot.items()
        if app_id == app.pk
        and user == openid
        and state == "available"
        and (k in ("formid", "prepay") if kind == "formid" else (k == "subscribe" and tid == template_id))
        and (expires is None or expires > usable_after)
    ]
    if kind == "subscribe":
        candidates = [(datetime.max.replace(tzinfo=UTC), pk) for _, pk in candidates]
    return min(candidates)[1] if candidates else None


def claim_and_check(app, snapshot, openids, kind, holder, now) -> dict[str, int]:
    claimed = services.claim_credits(
        app, template_kind=kind, template_id="T1", openids=openids, claimed_by=holder, now=now
    )
    got = {openid: credit.id for openid, credit in claimed.items()}
    expected = {}
    for openid in dict.fromkeys(openids):
        pick = best(snapshot, app, openid, kind, "T1", now)
        if pick is not None:
            expected[openid] = pick
    assert got == expected
    assert len(set(got.values())) == len(got)  # one credit each, none shared
    after = pool()
    for pk, row in snapshot.items():  # the claimed ones are held by us; nothing else moved
        if pk in got.values():
            assert after[pk][5:] == ("claimed", holder, row[7], now)
        else:
            assert after[pk] == row
    return got


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    # The two apps are the test's; each example's credits are rolled back at its end.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=credit_rows,
    first=recipients,
    second=recipients,
    overlap=st.booleans(),
    kind=st.sampled_from(["formid", "subscribe"]),
)
def test_claims_follow_the_rules_never_overlap_and_release_gives_back(
    two_apps, rows, first, second, overlap, kind
):
    now = timezone.now()
    with transaction.atomic():
        app = seed(two_apps, rows, now)
        a = claim_and_check(app, pool(), first, kind, "holder-a", now)
        second = first + second if overlap else second
        b = claim_and_check(app, pool(), second, kind, "holder-b", now)  # sees a's claims as taken
        assert not set(a.values()) & set(b.values())
        event(f"first claim: {min(len(a), 3)}{'+' if len(a) >= 3 else ''} credits")
        event(
            f"second claim: {'some' if b else 'no'} credits, {'some' if set(a) & set(b) else 'no'} same users"
        )

        before = pool()
        assert services.release(list(a.values()), "holder-b") == 0  # only the holder can release
        assert pool() == before
        assert services.release(list(a.values()), "holder-a") == len(a)
        after = pool()
        for pk in a.values():
            assert after[pk][5:7] == ("available", "")
        # Given back as they were: claimed again, the same recipients get the very same credits.
        c = claim_and_check(app, after, first, kind, "holder-c", now)
        assert c == a
        transaction.set_rollback(True)


# --- segments ----------------------------------------------------------------------------------------
# For any users of two apps with any tags (a, b, c, d), credits and opt-outs, and any segment, the users a
# segment push reaches are exactly those a brute-force evaluation of all/any/none selects: in the dry run's
# counts and in what the workers' enumeration claims and queues (small chunks and pages, so that pages fill
# across blocks and partial pages leave early).
SEGMENT_TAGS = ["a", "b", "c", "d"]
segment_users = st.lists(
    st.fixed_dictionaries(
        {
            "tags": st.sets(st.sampled_from(SEGMENT_TAGS)),
            "credit": st.sampled_from([True, True, True, False]),
            "enabled": st.sampled_from([True, True, True, False]),
            "other_app": st.sampled_from([False] * 4 + [True]),  # same tags in another tenant's app
        }
    ),
    min_size=4,
    max_size=14,
)
segment_lists = st.lists(st.sampled_from([*SEGMENT_TAGS] * 4 + ["z"]), max_size=2)  # z: a tag nobody has
any_lists = st.lists(st.sampled_from(SEGMENT_TAGS), min_size=1, max_size=3) | segment_lists


def in_segment_by_hand(tags: set[str], all_of, any_of, none_of) -> bool:
    return set(all_of) <= tags and (not any_of or bool(tags & set(any_of))) and not tags & set(none_of)


@pytest.fixture
def segment_world(two_apps, settings, monkeypatch):
    from templates_app import catalogue
    from templates_app.delivery import queue, start

    settings.PUSH_CHUNK_SIZE = 3
    monkeypatch.setattr(start, "PAGE_MAX_BLOCKS", 2)
    chunks: list[list[int]] = []
    monkeypatch.setattr(queue, "enqueue", lambda task, *args, countdown=None: chunks.append(list(args[1])))
    template = catalogue.create_template(
        two_apps[0],
        kind="formid",
        template_id="TPL_SEG",
        title="t",
        fields=[{"key": "keyword1", "name": "k"}],
        actor="test",
    )
    return two_apps, template, chunks


def seed_segment_users(two_apps, rows, now) -> dict[str, dict]:
    """The rows as users of their app, with their tags and a formId each if they have a credit; returns
    our app's users by openid."""
    from formids.models import MiniUser, UserTag

    ours = {}
    tags, credits = [], []
    for n, row in enumerate(rows):
        app = two_apps[1] if row["other_app"] else two_apps[0]
        user = MiniUser.objects.create(app=app, openid=f"oSeg{n:04d}", push_enabled=row["enabled"])
        tags += [UserTag(app=app, user=user, tag=tag) for tag in row["tags"]]
        if row["credit"]:
            credits.append(
                Credit(
                    app=app, user=user, kind="formid", value=f"segformid{n:06d}", expires_at=now + 100 * HOURS
                )
            )
        if not row["other_app"]:
            ours[user.openid] = row
    UserTag.objects.bulk_create(tags)
    Credit.objects.bulk_create(credits)
    return ours


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=segment_users, all_of=segment_lists, any_of=any_lists, none_of=segment_lists)
def test_a_segment_reaches_exactly_the_users_a_brute_force_evaluation_selects(
    segment_world, rows, all_of, any_of, none_of
):
    from templates_app.delivery.start import deliver_push
    from templates_app.models import Delivery, Push
    from templates_app.pushes.recipients import dry_run
    from templates_app.pushes.start import start_push

    two_apps, template, chunks = segment_world
    tags = {key: lists for key, lists in (("all", all_of), ("any", any_of), ("none", none_of)) if lists}
    body = {"to": {"tags": tags}, "data": {"keyword1": "x"}}
    if not all_of and not any_of:
        event("empty segment")
        result = parse(template, body)
        assert isinstance(result, ApiError) and result.field == "to.tags"
        return
    now = timezone.now()
    with transaction.atomic():
        ours = seed_segment_users(two_apps, rows, now)
        members = {
            o: row for o, row in ours.items() if in_segment_by_hand(row["tags"], all_of, any_of, none_of)
        }
        reached = {o for o, row in members.items() if row["credit"]}  # who the push is for, as with @all
        sent_to = {o for o in reached if members[o]["enabled"]}
        event(f"users reached: {min(len(reached), 4)}{'+' if len(reached) >= 4 else ''}")

        request = parse_send_request(template, body)
        assert dry_run(template, request) == {
            "recipients": len(members),
            "reachable": len(sent_to),
            "no_credit": len(members) - len(sent_to) - sum(not row["enabled"] for row in members.values()),
            "opted_out": sum(not row["enabled"] for row in members.values()),
        }

        chunks.clear()
        push = start_push(template, request, created_by="test", status_url=lambda p: "").push
        assert deliver_push(push.pk) == "started"
        push.refresh_from_db()
        rows_sent = dict(Delivery.objects.filter(push=push).values_list("pk", "openid"))
        assert set(rows_sent.values()) == sent_to
        assert (push.recipients, push.opted_out, push.no_credit) == (len(reached), len(reached - sent_to), 0)
        queued = [pk for chunk in chunks for pk in chunk]
        assert sorted(queued) == sorted(rows_sent) and all(0 < len(chunk) <= 3 for chunk in chunks)
        assert push.enumerated and push.status in (Push.Status.RUNNING, Push.Status.DONE)
        transaction.set_rollback(True)
