"""POST /sdk/v1/{appid}/identify {alias, user_hash}: the SDK binds the tenant's own id to the session's user,
with the tenant server's HMAC of it; {alias: null} unbinds (../shared/API.md "Audience — aliases and tags")."""

from __future__ import annotations

import hashlib
import hmac
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from formids import audience
from formids.models import MiniUser
from formids.services import touch_user
from pushhub import ratelimit
from tenants import services
from tests.conftest import random_appid, random_secret
from tests.sdk_helpers import OPENID, error, sdk_client, url

pytestmark = pytest.mark.django_db

OTHER = "oSdkUser00000000000000000002"
FROZEN_NOW = 1_800_000_000 + 10.0  # the middle of a rate-limit window


def server_side_user_hash(identity_secret: str, alias: str) -> str:
    """What the README tells a tenant's Python server to run, as written there."""
    return hmac.new(identity_secret.encode("utf-8"), alias.encode("utf-8"), hashlib.sha256).hexdigest()


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def phone(app):
    return sdk_client(app)


def identify(client, app, alias, user_hash=None, **extra):
    body = {"alias": alias, **({"user_hash": user_hash} if user_hash is not None else {}), **extra}
    return client.post(url(app, "identify"), body, format="json")


def signed(app, alias: str) -> str:
    return server_side_user_hash(app.get_identity_secret(), alias)


def alias_of(app, openid: str = OPENID) -> str | None:
    return MiniUser.objects.get(app=app, openid=openid).alias


def assert_refused(response) -> None:
    assert response.status_code == 403, response.content
    assert error(response)["code"] == "invalid_user_hash"
    assert error(response)["field"] == "user_hash"


# --- the hash ------------------------------------------------------------------------------------------
def test_the_user_hash_matches_the_documented_vectors():
    """The README's test vectors (its Node, Java and PHP snippets give the same)."""
    secret = "phid_example0000000000000000000000000000000"
    assert audience.user_hash(secret, "user-42") == (
        "c1dc77bf8bea4e6c6959c3fccdb7827ae022950275e285be8a99796a27704c05"
    )
    assert (
        audience.user_hash(secret, "张三")
        == "780d8951c9de661b68325136a7507f76fceed09a79fad4a17f23bb960d9c44b1"
    )
    assert server_side_user_hash(secret, "张三") == audience.user_hash(secret, "张三")


# --- binding -------------------------------------------------------------------------------------------
def test_a_correct_hash_binds_the_alias(app, phone):
    response = identify(phone, app, "user-42", signed(app, "user-42"))
    assert response.status_code == 200, response.content
    assert response.json() == {"alias": "user-42"}
    assert alias_of(app) == "user-42"
    assert "no-store" in response["Cache-Control"]


def test_an_alias_of_any_script_is_hashed_as_utf8(app, phone):
    for alias in ("张三", "Émile Zola", "x🙂y"):
        assert identify(phone, app, alias, signed(app, alias)).json() == {"alias": alias}


def test_an_uppercase_hash_is_accepted(app, phone):
    assert identify(phone, app, "user-42", signed(app, "user-42").upper()).status_code == 200


def test_an_alias_another_user_holds_moves_to_this_one(app, phone):
    audience.set_user_audience(touch_user(app, OTHER), alias="user-42")
    assert identify(phone, app, "user-42", signed(app, "user-42")).status_code == 200
    assert (alias_of(app), alias_of(app, OTHER)) == ("user-42", None)


def test_null_unbinds_without_a_hash(app, phone):
    identify(phone, app, "user-42", signed(app, "user-42"))
    response = identify(phone, app, None)
    assert response.status_code == 200 and response.json() == {"alias": None}
    assert alias_of(app) is None
    assert identify(phone, app, None, user_hash="anything").json() == {"alias": None}


def test_unbinding_touches_no_other_user(app, phone):
    audience.set_user_audience(touch_user(app, OTHER), alias="user-7")
    identify(phone, app, None)
    assert alias_of(app, OTHER) == "user-7"


# --- refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "user_hash",
    [
        "0" * 64,
        "",
        "not hex at all",
        "ÿ" * 64,  # not ASCII: compared as bytes, never a 500
        "c1dc77bf",
    ],
)
def test_a_wrong_hash_is_refused_and_changes_nothing(app, phone, user_hash):
    audience.set_user_audience(MiniUser.objects.get(app=app, openid=OPENID), alias="mine")
    audience.set_user_audience(touch_user(app, OTHER), alias="victim")
    assert_refused(identify(phone, app, "victim", user_hash))
    assert (alias_of(app), alias_of(app, OTHER)) == ("mine", "victim")


@pytest.mark.parametrize("body", [{"alias": "victim"}, {"alias": "victim", "user_hash": None}])
def test_a_missing_hash_is_refused(app, phone, body):
    audience.set_user_audience(touch_user(app, OTHER), alias="victim")
    assert_refused(phone.post(url(app, "identify"), body, format="json"))
    assert (alias_of(app), alias_of(app, OTHER)) == (None, "victim")


def test_a_hash_for_another_alias_is_refused(app, phone):
    assert_refused(identify(phone, app, "user-43", signed(app, "user-42")))
    assert alias_of(app) is None


def test_another_apps_secret_is_refused(app, phone, tenant):
    other = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="B", sandbox_app=True
    )
    assert_refused(identify(phone, app, "user-42", signed(other, "user-42")))


def test_rotating_the_secret_makes_the_old_hashes_fail_at_once(app, phone, api):
    old_hash = signed(app, "user-42")
    new_secret = api.post(f"/api/v1/apps/{app.appid}/identity-secret/rotate").json()["identity_secret"]
    assert_refused(identify(phone, app, "user-42", old_hash))
    assert alias_of(app) is None
    new_hash = server_side_user_hash(new_secret, "user-42")
    assert identify(phone, app, "user-42", new_hash).json() == {"alias": "user-42"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"alias": ""}, "alias"),
        ({"alias": "a" * 129}, "alias"),
        ({"alias": "new\nline"}, "alias"),
        ({"alias": 42}, "alias"),
        ({}, "alias"),
        ({"alias": "user-42", "user_hash": 7}, "user_hash"),
        ({"alias": "user-42", "user_hash": ["x"]}, "user_hash"),
        ({"alias": "user-42", "tags": ["vip"]}, "tags"),
    ],
)
def test_malformed_input_is_a_400_naming_the_field(app, phone, body, field):
    if isinstance(body.get("alias"), str) and "user_hash" not in body:
        body = {**body, "user_hash": signed(app, body["alias"])}  # a valid hash: the alias alone is at fault
    response = phone.post(url(app, "identify"), body, format="json")
    assert response.status_code == 400, response.content
    assert (error(response)["code"], error(response)["field"]) == ("validation_error", field)
    assert alias_of(app) is None


def test_identify_needs_a_session(app):
    response = APIClient().post(url(app, "identify"), {"alias": "user-42"}, format="json")
    assert response.status_code == 401 and error(response)["code"] == "not_authenticated"


def test_a_deleted_app_is_404(app, phone):
    hashed = signed(app, "user-42")
    services.delete_app(app)
    assert identify(phone, app, "user-42", hashed).status_code == 404


# --- rate limits ---------------------------------------------------------------------------------------
@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: FROZEN_NOW))


def test_failed_attempts_count_against_the_users_rate_limit(app, phone, settings, frozen_clock):
    settings.SDK_RATE_PER_OPENID = 3
    settings.SDK_RATE_PER_IP = 1000
    first, second = identify(phone, app, "victim", "0" * 64), identify(phone, app, "victim", "1" * 64)
    assert_refused(first)
    assert_refused(second)
    assert (first["RateLimit-Remaining"], second["RateLimit-Remaining"]) == ("2", "1")
    assert_refused(identify(phone, app, "victim", "2" * 64))

    right = identify(phone, app, "victim", signed(app, "victim"))  # even the right hash waits now
    assert right.status_code == 429 and error(right)["code"] == "rate_limited"
    assert alias_of(app) is None


def test_failed_attempts_count_against_the_address(app, settings, frozen_clock):
    settings.SDK_RATE_PER_IP = 2
    settings.SDK_RATE_PER_OPENID = 1000
    guesses = [sdk_client(app, f"oGuesser{n:020d}") for n in range(3)]  # a new session per guess
    statuses = [identify(client, app, "victim", "0" * 64).status_code for client in guesses]
    assert statuses == [403, 403, 429]
