"""The JavaScript tests' fake server (tests/js/fake-wx.js) answers only what PushHub documents: its contract file
is the server's, the server's schema covers every SDK route, and what the fake assumes of the server holds."""

from __future__ import annotations

from functools import cache

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from tests import sdk_contract
from tests.sdk_helpers import error, sdk_client, url

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@cache
def server_contract() -> dict:
    """What the server's schema says now (generating the schema takes about a second: once per run)."""
    return sdk_contract.build_contract()


def test_the_js_contract_file_is_what_the_server_says():
    diff = sdk_contract.stale_diff(server_contract())
    assert not diff, (
        f"tests/js/sdk-contract.json is stale: regenerate it with `{sdk_contract.COMMAND}` and fix what "
        f"`node --test tests/js/` then shows.\n{diff}"
    )


def sdk_routes(resolver: URLResolver | None = None, prefix: str = ""):
    """("METHOD endpoint") for every route under sdk/v1/<appid>/ and every method its view answers."""
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from sdk_routes(pattern, route)
            continue
        assert isinstance(pattern, URLPattern)
        if not route.startswith("sdk/v1/<str:appid>/"):
            continue
        view = pattern.callback.view_class
        endpoint = route.removeprefix("sdk/v1/<str:appid>/")
        for method in HTTP_METHODS:
            if hasattr(view, method):
                yield f"{method.upper()} {endpoint}"


def test_the_contract_has_every_sdk_route_and_nothing_else():
    """The contract comes from the schema; this holds the schema to the URL map (a view left out of the schema
    would be a route the fake refuses)."""
    routes = sorted(sdk_routes())
    assert routes, "no /sdk/v1 route found: has the URL map moved?"
    assert routes == sorted(server_contract()["operations"])


def test_prepay_ids_are_posted_to_formids():
    """Issue 14: the SDK posted them to a prepay_ids route that never existed."""
    operations = server_contract()["operations"]
    assert "POST prepay_ids" not in operations
    assert operations["POST formids"]["request"] == {
        "properties": ["formids", "prepay_ids"],
        "required": [],
        "additional": False,
    }


# --- what the fake assumes of the server ---------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "operation", [op for op, spec in server_contract()["operations"].items() if spec["request"]]
)
def test_the_server_refuses_a_field_it_does_not_know_as_the_fake_does(sandbox_app, operation):
    """The fake answers 400 validation_error to a request body with a field outside the contract."""
    method, endpoint = operation.split(" ")
    valid = {
        "login": {"code": "x"},
        "formids": {"formids": ["formid00000000000000000000000001"]},
        "subscriptions": {"results": {"TID": "accept"}},
        "settings": {"push_enabled": True},
        "identify": {"alias": None},
        "opens": {"ref": "abcdef1"},
        "inbox/read": {"all": True},
    }[endpoint]
    client = APIClient() if endpoint == "login" else sdk_client(sandbox_app)
    body = {**valid, "prepayIds": ["p"]}
    response = getattr(client, method.lower())(url(sandbox_app, endpoint), body, format="json")
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "validation_error"


@pytest.mark.django_db
def test_the_server_answers_a_method_it_does_not_take_with_405_as_the_fake_does(sandbox_app):
    response = sdk_client(sandbox_app).get(url(sandbox_app, "formids"))
    assert response.status_code == 405
    assert error(response)["code"] == "method_not_allowed"
