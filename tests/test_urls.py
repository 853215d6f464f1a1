"""The URL map: every name means one route, so ``reverse()`` and ``{% url %}`` build the link they say."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from templates_app import catalogue


def named_patterns(resolver: URLResolver | None = None, prefix: str = "", namespace: str = ""):
    """(``namespace:name``, full route) of every named pattern, through includes and their namespaces."""
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from named_patterns(pattern, route, inner)
        else:
            assert isinstance(pattern, URLPattern)
            if pattern.name:  # an unnamed pattern cannot be reversed, so it cannot be mistaken for another
                yield f"{namespace}{pattern.name}", route


def test_every_url_name_is_used_by_one_pattern():
    """Two patterns under one name: reverse() quietly picks one of them (the dashboard's page for an API
    route, say). API routes are named ``api-…``; see pushhub/urls.py."""
    routes = defaultdict(list)
    for name, route in named_patterns():
        routes[name].append(route)
    shared = {name: found for name, found in sorted(routes.items()) if len(found) > 1}
    assert not shared, f"URL names used by more than one pattern: {shared}"


# The naming rule of pushhub/urls.py: a route's prefix shows in its name.
NAME_PREFIXES = {"api/v1/": "api-", "sdk/v1/": "sdk-", "t/": "trigger", "wechat/": "wechat-"}


def test_the_public_routes_are_named_after_their_prefix():
    misnamed = [
        (name, route)
        for name, route in named_patterns()
        for prefix, start in NAME_PREFIXES.items()
        if route.startswith(prefix) and not name.startswith(start)
    ]
    assert not misnamed, f"name these routes {NAME_PREFIXES}: {misnamed}"


# --- a path no route matches -------------------------------------------------------------------------
@pytest.fixture
def template(sandbox_app):
    return catalogue.create_template(
        sandbox_app,
        kind="subscribe",
        template_id="TPL_URLS",
        title="Order shipped",
        fields=[{"key": "thing1", "name": "item"}],
        actor="test",
    )


def assert_json_not_found(response) -> None:
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}


@pytest.mark.parametrize("debug", [False, True], ids=["production", "DEBUG"])
def test_an_unroutable_api_path_is_the_json_404(settings, api, sandbox_app, template, debug):
    """The contract: never an HTML error page under /api, /sdk, /t, /wechat, DEBUG or not. A malformed id
    no longer reaches the views (the routes say ``<uuid:…>``), so this is the answer it gets."""
    settings.DEBUG = debug
    token = template.get_trigger_token()
    for path in (
        "/api/v1/templates/not-a-uuid",
        "/api/v1/templates/not-a-uuid/rotate",
        "/api/v1/pushes/not-a-uuid/cancel",
        "/api/v1/no-such-route",
        "/api/nothing-here",
        f"/sdk/v1/{sandbox_app.appid}/no-such-route",
        f"/sdk/v1/{sandbox_app.appid}/prepay_ids",  # what the SDK once posted prepay_ids to (issue 14)
        f"/t/{token}/pushes/not-a-uuid",
        f"/wechat/{sandbox_app.appid}/no-such-route",
    ):
        assert_json_not_found(api.get(path))
    assert_json_not_found(api.post("/api/v1/templates/not-a-uuid/pushes", {}, format="json"))
    # ...and as the SDK calls it: a POST with a JSON body and a session (none needed to get the 404)
    assert_json_not_found(
        Client().post(
            f"/sdk/v1/{sandbox_app.appid}/prepay_ids",
            {"prepay_ids": ["wx20260101120000abcdef0123456789"]},
            content_type="application/json",
            HTTP_AUTHORIZATION="Session not-checked",
        )
    )


@pytest.mark.parametrize("debug", [False, True], ids=["production", "DEBUG"])
def test_well_formed_ids_still_reach_their_views(settings, api, template, debug):
    settings.DEBUG = debug
    assert api.get(f"/api/v1/templates/{template.pk}").json()["id"] == str(template.pk)
    body = {"to": "oNobody", "data": {"thing1": "socks"}}  # no credit: a push all the same
    sent = api.post(f"/api/v1/templates/{template.pk}/pushes", body, format="json")
    assert sent.status_code == 202, sent.content
    push_id = sent.json()["push_id"]
    assert api.get(f"/api/v1/pushes/{push_id}").json()["id"] == push_id
    token = template.get_trigger_token()
    assert Client().get(f"/t/{token}/pushes/{push_id}").json()["id"] == push_id
    assert_json_not_found(Client().get(f"/t/{token}/pushes/{uuid.uuid4()}"))  # the view's own 404
    # APPEND_SLASH still redirects a path that only lacks its slash (a 404 before CommonMiddleware).
    response = Client().get("/api/schema")
    assert response.status_code == 301 and response["Location"] == "/api/schema/"


@pytest.mark.parametrize("debug", [False, True], ids=["production", "DEBUG"])
def test_the_dashboard_keeps_its_html_404(settings, db, debug):
    settings.DEBUG = debug
    for path in ("/dashboard/templates/not-a-uuid/", "/dashboard/pushes/not-a-uuid/", "/dashboard/nothing/"):
        response = Client().get(path)
        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html"), path
