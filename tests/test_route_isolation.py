"""Tenant isolation, route by route (issue 7): every URL pattern of the project has an entry in ``ROUTES``.

An entry is one of
- ``Case``: a route that works on tenant-owned objects, with how to build the URL for tenant A's object and
  which methods to try. The generated tests then show, per method, that tenant B's write key (API) or B's
  owner (dashboard) gets 404 on A's object and A's data is unchanged; that A's read key gets 403 on a write
  (contract error format) and A's viewer gets 403 on a dashboard change, nothing changed either; and, so that
  the case itself can fail, that A's own write key / owner gets the same request through (a write changing
  A's data) and A's read key / viewer can read. A ``Case`` without an object in its URL (``markers``) is a
  list: B's listing shows B's objects and none of A's, and the other way round.
- ``Dedicated``: a route with its own credential (trigger token, SDK session, WeChat signature, ...), proven
  by the named tests further down.
- ``Exempt``: no tenant data behind it, with the reason. ``EXEMPT_PREFIXES`` exempts whole subtrees (the
  Django admin, the sandbox) whose patterns are generated and carry no tenant.

``test_every_route_has_an_entry`` walks Django's URL resolver: a route without an entry fails the suite by
name, and so does an entry whose route is gone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from rest_framework.test import APIClient

from formids import audience
from formids import services as credits
from formids.models import Credit, InboundEvent, MiniUser, UserTag
from formids.sdk_auth import issue_session
from pushhub.wechat import client as wechat_client
from pushhub.wechat.sandbox import services as sandbox
from pushhub.wechat.sandbox.models import SandboxUser
from templates_app import catalogue
from templates_app.models import Delivery, InboxMessage, Push, Template
from templates_app.opens_ref import make_ref
from templates_app.pushes.request import parse_send_request
from templates_app.pushes.start import start_push
from tenants import services
from tenants.dashboard_views import NEW_KEY_SESSION_KEY
from tenants.models import ApiKey, AuditEvent, Membership, MiniProgram, Tenant
from tests.conftest import api_client, random_appid, random_secret
from webhooks import outbox
from webhooks import services as webhooks
from webhooks.models import EventDispatch, WebhookEndpoint

KEY = "api key"
SESSION = "dashboard session"
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
SANDBOX_BASE = "http://sandbox.in-process/sandbox/wechat"


# --- the two tenants -------------------------------------------------------------------------------
@dataclass
class World:
    """Tenant A (Acme: owner, viewer, keys) and tenant B (Globex), each with a sandbox app, a subscribe
    template and a push; A's app also has a user with credits, one claimed by A's push. Tests act on A's
    things as B (or as A's viewer or read key) and check A's things afterwards."""

    a: Tenant
    b: Tenant
    a_owner: object
    b_owner: object
    a_viewer: Membership
    a_app: MiniProgram
    b_app: MiniProgram
    a_tpl: Template
    b_tpl: Template
    a_openid: str
    a_push: Push
    b_push: Push
    a_write: str
    a_read: str
    b_write: str
    a_write_key: ApiKey
    b_write_key: ApiKey
    a_read_key: ApiKey
    a_marker: str  # the object_id of an audit event of A's
    b_marker: str
    a_webhook: WebhookEndpoint | None = None  # with one event (a_event) recorded for it
    b_webhook: WebhookEndpoint | None = None
    a_event: str = ""


def of(w: World, side: str, name: str):
    """``of(w, "a", "app")`` is ``w.a_app``."""
    return getattr(w, f"{side}_{name}")


def _side(tenant: Tenant, label: str, *, full: bool = True):
    """A sandbox app, a subscribe template and a push of ``tenant``; ``full``: with WeChat's side of the
    templates, a user with credits, and the push claiming one of them (B's side needs none of that)."""
    app = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name=f"{label} shop", sandbox_app=True
    )
    template = catalogue.create_template(
        app,
        kind="subscribe",
        template_id=f"TPL-{label}-ORDER",
        title=f"{label} order shipped",
        fields=[{"key": "thing1", "name": "item"}],
        actor="test",
    )
    if not full:
        return app, template, "", _push(template, "oNobody")
    # WeChat's side knows the template (a subscription accept goes through) and one more (a sync adds it).
    sandbox.add_template(
        app.appid,
        kind="subscribe",
        title="Order shipped",
        content="商品:{{thing1.DATA}}",
        template_id=template.template_id,
    )
    sandbox.add_template(app.appid, kind="subscribe", title="Refund", content="金额:{{amount1.DATA}}")
    openid = sandbox.create_user(app.appid).openid
    user = credits.touch_user(app, openid)
    # Two subscribe credits: the push below claims one, the other stays available; and one formId.
    credits.add_subscribe_credits(app, user, [template.template_id] * 2, source=Credit.Source.SDK)
    credits.take_ids(app, user, formids=sandbox.issue_formids(app.appid, openid, count=1))
    # The audience: the user has an alias and the tag "vip"; a second user (no credits) has only an alias.
    audience.set_user_audience(user, alias=f"{label}-user-1", tags=["vip"])
    audience.set_user_audience(credits.touch_user(app, f"o{label}-untagged"), alias=f"{label}-user-2")
    push = _push(template, openid)
    # The user's in-app inbox holds the push's message, unread.
    delivery = Delivery.objects.get(push=push, openid=openid)
    InboxMessage.objects.create(
        app=app, openid=openid, push=push, delivery_id=delivery.pk, sent_at=timezone.now()
    )
    return app, template, openid, push


def _push(template: Template, openid: str) -> Push:
    request = parse_send_request(template, {"to": [openid], "data": {"thing1": {"value": "socks"}}})
    return start_push(template, request, created_by="test", status_url=lambda p: f"/x/{p.pk}").push


@pytest.fixture
def world(tenant, other_tenant, viewer) -> World:
    a_app, a_tpl, a_openid, a_push = _side(tenant, "A")
    b_app, b_tpl, _nobody, b_push = _side(other_tenant, "B", full=False)
    a_read_key, a_read = services.create_api_key(tenant, "read", name="a-read")
    a_write_key, a_write = services.create_api_key(tenant, "write", name="a-write")
    b_write_key, b_write = services.create_api_key(other_tenant, "write", name="b-write")
    markers = {}
    for side, team in (("a", tenant), ("b", other_tenant)):
        markers[side] = f"isolation-marker-{side}-{secrets.token_hex(4)}"
        services.audit(team, "system", "app.update", "app", markers[side])
    owners = Membership.objects.filter(role=Membership.Role.OWNER).select_related("user")
    return World(
        a=tenant,
        b=other_tenant,
        a_owner=owners.get(tenant=tenant).user,
        b_owner=owners.get(tenant=other_tenant).user,
        a_viewer=Membership.objects.get(tenant=tenant, user=viewer),
        a_app=a_app,
        b_app=b_app,
        a_tpl=a_tpl,
        b_tpl=b_tpl,
        a_openid=a_openid,
        a_push=a_push,
        b_push=b_push,
        a_write=a_write,
        a_read=a_read,
        b_write=b_write,
        a_write_key=a_write_key,
        b_write_key=b_write_key,
        a_read_key=a_read_key,
        a_marker=markers["a"],
        b_marker=markers["b"],
        **_webhooks(tenant, other_tenant),
    )


WEBHOOK_URL = "https://93.184.216.34/hooks"  # public: the SSRF guard lets it through without DNS


def _webhooks(a: Tenant, b: Tenant) -> dict:
    """An endpoint per tenant; A's has an event recorded for it (for the attempts log and resend)."""
    a_webhook, _ = webhooks.create_endpoint(a, url=WEBHOOK_URL + "/a", events=["*"])
    b_webhook, _ = webhooks.create_endpoint(b, url=WEBHOOK_URL + "/b", events=["*"])
    (event,) = outbox.record(a.pk, outbox.WEBHOOK_TEST, [{}], endpoint_ids=[a_webhook.pk])
    return {"a_webhook": a_webhook, "b_webhook": b_webhook, "a_event": event.pk}


def snapshot(w: World) -> dict:
    """Everything of tenant A's that a request could change (not last_used_at / last_seen bookkeeping)."""
    apps = MiniProgram.objects.filter(tenant=w.a)
    return {
        "apps": list(
            apps.order_by("pk").values(
                "pk",
                "appid",
                "name",
                "sandbox",
                "credit_source",
                "secret_ciphertext",
                "events_token",
                "events_aes_key_ciphertext",
                "identity_secret_ciphertext",
                "deleted_at",
            )
        ),
        "templates": list(
            Template.objects.filter(app__tenant=w.a)
            .order_by("pk")
            .values(
                "pk",
                "title",
                "fields",
                "page",
                "status",
                "trigger_token_hash",
                "trigger_enabled",
                "track_opens",
            )
        ),
        "pushes": list(
            Push.objects.filter(tenant=w.a)
            .order_by("pk")
            .values("pk", "status", "sent", "failed", "pending", "opened")
        ),
        "deliveries": list(
            Delivery.objects.filter(push__tenant=w.a)
            .order_by("pk")
            .values("pk", "status", "errcode", "opened_at")
        ),
        "credits": list(
            Credit.objects.filter(app__tenant=w.a).order_by("pk").values("pk", "state", "uses_left")
        ),
        "users": list(
            MiniUser.objects.filter(app__tenant=w.a).order_by("pk").values("pk", "push_enabled", "alias")
        ),
        "user_tags": list(
            UserTag.objects.filter(app__tenant=w.a).order_by("pk").values("pk", "user_id", "tag")
        ),
        "inbound_events": InboundEvent.objects.filter(app__tenant=w.a).count(),
        "inbox": list(
            InboxMessage.objects.filter(app__tenant=w.a).order_by("pk").values("pk", "openid", "read_at")
        ),
        "keys": list(ApiKey.objects.filter(tenant=w.a).order_by("pk").values("pk", "scope", "revoked_at")),
        "members": list(Membership.objects.filter(tenant=w.a).order_by("pk").values("pk", "user_id", "role")),
        "audit_events": AuditEvent.objects.filter(tenant=w.a).count(),
        "webhooks": list(
            WebhookEndpoint.objects.filter(tenant=w.a)
            .order_by("pk")
            .values("pk", "url", "events", "enabled", "description", "secret_ciphertext")
        ),
        "webhook_dispatches": list(
            EventDispatch.objects.filter(endpoint__tenant=w.a)
            .order_by("pk")
            .values("pk", "status", "retries", "next_attempt_at")
        ),
        "sandbox_users": SandboxUser.objects.filter(app__appid__in=apps.values("appid")).count(),
    }


# --- the sandbox, in process -----------------------------------------------------------------------
class InProcessSandbox:
    """Stands in for the WeChat client's urllib3 pool: calls to the sandbox are served by this process's
    sandbox views through Django's test client (same thread, same test transaction), so the template sync,
    the access-token proxy and the SDK login work without a live server."""

    def __init__(self):
        self.client = Client()

    def request(self, method, url, body=None, headers=None, timeout=None):
        assert url.startswith(SANDBOX_BASE + "/"), f"only the sandbox is reachable in these tests: {url}"
        parts = urlsplit(url)
        response = self.client.generic(
            method,
            f"{parts.path}?{parts.query}" if parts.query else parts.path,
            data=body or b"",
            content_type=(headers or {}).get("Content-Type", ""),
        )
        return SimpleNamespace(status=response.status_code, data=response.content)


@pytest.fixture(autouse=True)
def _sandbox_in_process(settings, monkeypatch):
    settings.SANDBOX_API_BASE = SANDBOX_BASE
    pool = InProcessSandbox()
    monkeypatch.setattr(wechat_client, "http_pool", lambda: pool)


# --- clients ---------------------------------------------------------------------------------------
def session_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def key_request(raw_key: str, method: str, path: str, body: dict | None = None):
    client = api_client(raw_key)
    data = json.dumps(body) if body is not None else ""
    return client.generic(method, path, data=data, content_type="application/json")


def page_request(client: Client, method: str, path: str, body: dict | None = None):
    if method == "GET":
        return client.get(path)
    return client.generic(
        method, path, data=urlencode(body or {}), content_type="application/x-www-form-urlencoded"
    )


def assert_error(response, status: int, code: str) -> None:
    """The contract's error: the status, JSON ``{"error": {"code", "message", "field"?}}``."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


# --- the table -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A route on tenant-owned things. ``url`` gives tenant A's URL; ``bodies`` a valid body per method (valid
    for A: the owner's sanity request uses the same). ``markers``: a list route (no object in the URL); they
    give a side's identifiers (``markers(w, "a")``): B's listing shows B's and none of A's, and the other way
    round."""

    auth: str
    url: Callable[[World], str]
    methods: tuple[str, ...]
    bodies: dict[str, Callable[[World], dict]] = field(default_factory=dict)
    markers: Callable[[World, str], list[str]] | None = None
    read_needs_write_key: bool = False  # a GET only a write key may do (the access-token proxy)
    viewer_reads: bool = True  # viewers see every page, except owner-only ones

    def body(self, w: World, method: str) -> dict | None:
        builder = self.bodies.get(method)
        return builder(w) if builder else None

    def needs_write(self, method: str) -> bool:
        return method not in SAFE or (self.read_needs_write_key and self.auth == KEY)


@dataclass(frozen=True)
class Dedicated:
    reason: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Exempt:
    reason: str


def _new_app(w: World) -> dict:
    return {"appid": random_appid(), "secret": random_secret(), "name": "New shop", "sandbox": True}


def _new_app_form(w: World) -> dict:
    return {"appid": random_appid(), "secret": random_secret(), "name": "New shop", "sandbox": "on"}


NEW_TEMPLATE = {
    "kind": "subscribe",
    "template_id": "TPL-NEW",
    "title": "New template",
    "fields": [{"key": "thing1", "name": "item"}],
}


def api(path: Callable[[World], str], *methods: str, **options) -> Case:
    return Case(KEY, path, methods, **options)


def page(path: Callable[[World], str], *methods: str, **options) -> Case:
    return Case(SESSION, path, methods, **options)


def nothing_listed(w: World, side: str) -> list[str]:
    """``markers`` of a create-only route (a form, an invitation): no object in the URL, nothing listed."""
    return []


def _app(w: World) -> str:
    return w.a_app.appid


ROUTES: dict[str, Case | Dedicated | Exempt] = {
    # --- /api/v1: API keys ------------------------------------------------------------------------
    "api/v1/apps$": api(
        lambda w: "/api/v1/apps",
        "GET",
        "POST",
        bodies={"POST": _new_app},
        markers=lambda w, s: [of(w, s, "app").appid],
    ),
    "api/v1/apps/(?P<appid>[^/]+)$": api(
        lambda w: f"/api/v1/apps/{_app(w)}",
        "GET",
        "PATCH",
        "DELETE",
        bodies={"PATCH": lambda w: {"name": "X"}},
    ),
    "api/v1/apps/(?P<appid>[^/]+)/events-credentials/rotate$": api(
        lambda w: f"/api/v1/apps/{_app(w)}/events-credentials/rotate", "POST"
    ),
    "api/v1/apps/(?P<appid>[^/]+)/identity-secret/rotate$": api(
        lambda w: f"/api/v1/apps/{_app(w)}/identity-secret/rotate", "POST"
    ),
    "api/v1/apps/<str:appid>/access-token": api(
        lambda w: f"/api/v1/apps/{_app(w)}/access-token", "GET", read_needs_write_key=True
    ),
    "api/v1/apps/<str:appid>/quota": api(lambda w: f"/api/v1/apps/{_app(w)}/quota", "GET"),
    "api/v1/apps/<str:appid>/users": api(lambda w: f"/api/v1/apps/{_app(w)}/users", "GET"),
    "api/v1/apps/<str:appid>/stats": api(
        lambda w: f"/api/v1/apps/{_app(w)}/stats?template={w.a_tpl.template_id}", "GET"
    ),
    "api/v1/apps/<str:appid>/users/<str:openid>": api(
        lambda w: f"/api/v1/apps/{_app(w)}/users/{w.a_openid}",
        "GET",
        "PATCH",
        bodies={"PATCH": lambda w: {"alias": "renamed", "tags": ["gold"]}},
    ),
    "api/v1/apps/<str:appid>/tags": api(lambda w: f"/api/v1/apps/{_app(w)}/tags", "GET"),
    "api/v1/apps/<str:appid>/tags/<str:tag>/members": api(
        lambda w: f"/api/v1/apps/{_app(w)}/tags/vip/members",
        "POST",
        "DELETE",
        # A's first user has "vip" (DELETE takes it away), the second not yet (POST gives it).
        bodies={"POST": lambda w: {"aliases": ["A-user-2"]}, "DELETE": lambda w: {"openids": [w.a_openid]}},
    ),
    "api/v1/apps/<str:appid>/templates": api(
        lambda w: f"/api/v1/apps/{_app(w)}/templates", "GET", "POST", bodies={"POST": lambda w: NEW_TEMPLATE}
    ),
    "api/v1/apps/<str:appid>/templates/sync": api(lambda w: f"/api/v1/apps/{_app(w)}/templates/sync", "POST"),
    "api/v1/templates/<uuid:id>": api(
        lambda w: f"/api/v1/templates/{w.a_tpl.pk}",
        "GET",
        "PATCH",
        "DELETE",
        bodies={"PATCH": lambda w: {"title": "Renamed", "trigger_enabled": False}},
    ),
    "api/v1/templates/<uuid:id>/rotate": api(lambda w: f"/api/v1/templates/{w.a_tpl.pk}/rotate", "POST"),
    "api/v1/templates/<uuid:id>/pushes": api(
        lambda w: f"/api/v1/templates/{w.a_tpl.pk}/pushes",
        "POST",
        bodies={"POST": lambda w: {"to": w.a_openid, "data": {"thing1": "socks"}}},
    ),
    "api/v1/pushes": api(lambda w: "/api/v1/pushes", "GET", markers=lambda w, s: [str(of(w, s, "push").pk)]),
    "api/v1/pushes/<uuid:pk>": api(lambda w: f"/api/v1/pushes/{w.a_push.pk}", "GET"),
    "api/v1/pushes/<uuid:pk>/deliveries": api(lambda w: f"/api/v1/pushes/{w.a_push.pk}/deliveries", "GET"),
    "api/v1/pushes/<uuid:pk>/cancel": api(lambda w: f"/api/v1/pushes/{w.a_push.pk}/cancel", "POST"),
    "api/v1/webhooks": api(
        lambda w: "/api/v1/webhooks",
        "GET",
        "POST",
        bodies={"POST": lambda w: {"url": WEBHOOK_URL + "/new", "events": ["push.finished"]}},
        markers=lambda w, s: [str(of(w, s, "webhook").pk)],
    ),
    "api/v1/webhooks/<uuid:pk>": api(
        lambda w: f"/api/v1/webhooks/{w.a_webhook.pk}",
        "GET",
        "PATCH",
        "DELETE",
        bodies={"PATCH": lambda w: {"enabled": False, "description": "changed"}},
    ),
    "api/v1/webhooks/<uuid:pk>/rotate-secret": api(
        lambda w: f"/api/v1/webhooks/{w.a_webhook.pk}/rotate-secret", "POST"
    ),
    "api/v1/webhooks/<uuid:pk>/test": api(lambda w: f"/api/v1/webhooks/{w.a_webhook.pk}/test", "POST"),
    "api/v1/webhooks/<uuid:pk>/attempts": api(lambda w: f"/api/v1/webhooks/{w.a_webhook.pk}/attempts", "GET"),
    "api/v1/webhooks/<uuid:pk>/events/<str:event_id>/resend": api(
        lambda w: f"/api/v1/webhooks/{w.a_webhook.pk}/events/{w.a_event}/resend", "POST"
    ),
    # --- the dashboard: signed-in members of the current tenant ---------------------------------------
    "dashboard/": page(lambda w: "/dashboard/", "GET", markers=lambda w, s: [of(w, s, "app").appid]),
    "dashboard/apps/new": page(
        lambda w: "/dashboard/apps/new", "GET", "POST", bodies={"POST": _new_app_form}, markers=nothing_listed
    ),
    "dashboard/apps/<str:appid>/": page(lambda w: f"/dashboard/apps/{_app(w)}/", "GET"),
    "dashboard/apps/<str:appid>/update": page(
        lambda w: f"/dashboard/apps/{_app(w)}/update",
        "POST",
        bodies={"POST": lambda w: {"name": "Renamed", "credit_source": "events"}},
    ),
    "dashboard/apps/<str:appid>/rotate-events": page(
        lambda w: f"/dashboard/apps/{_app(w)}/rotate-events", "POST"
    ),
    "dashboard/apps/<str:appid>/rotate-identity-secret": page(
        lambda w: f"/dashboard/apps/{_app(w)}/rotate-identity-secret", "POST"
    ),
    "dashboard/apps/<str:appid>/delete": page(lambda w: f"/dashboard/apps/{_app(w)}/delete", "POST"),
    "dashboard/apps/<str:appid>/quota/": page(lambda w: f"/dashboard/apps/{_app(w)}/quota/", "GET"),
    "dashboard/apps/<str:appid>/quota/chart.json": page(
        lambda w: f"/dashboard/apps/{_app(w)}/quota/chart.json", "GET"
    ),
    "dashboard/apps/<str:appid>/quota/funnel.json": page(
        lambda w: f"/dashboard/apps/{_app(w)}/quota/funnel.json?days=7", "GET"
    ),
    "dashboard/apps/<str:appid>/users/": page(lambda w: f"/dashboard/apps/{_app(w)}/users/", "GET"),
    "dashboard/apps/<str:appid>/users/<str:openid>/": page(
        lambda w: f"/dashboard/apps/{_app(w)}/users/{w.a_openid}/", "GET"
    ),
    "dashboard/apps/<str:appid>/tags/": page(lambda w: f"/dashboard/apps/{_app(w)}/tags/", "GET"),
    "dashboard/apps/<str:appid>/templates/": page(
        lambda w: f"/dashboard/apps/{_app(w)}/templates/",
        "GET",
        "POST",
        bodies={"POST": lambda w: {**NEW_TEMPLATE, "fields": "thing1:item"}},
    ),
    "dashboard/apps/<str:appid>/templates/sync": page(
        lambda w: f"/dashboard/apps/{_app(w)}/templates/sync", "POST"
    ),
    "dashboard/apps/<str:appid>/phone/": page(lambda w: f"/dashboard/apps/{_app(w)}/phone/", "GET"),
    "dashboard/apps/<str:appid>/phone/users": page(
        lambda w: f"/dashboard/apps/{_app(w)}/phone/users", "POST"
    ),
    "dashboard/apps/<str:appid>/phone/form": page(
        lambda w: f"/dashboard/apps/{_app(w)}/phone/form",
        "POST",
        bodies={"POST": lambda w: {"openid": w.a_openid}},
    ),
    "dashboard/apps/<str:appid>/phone/accept": page(
        lambda w: f"/dashboard/apps/{_app(w)}/phone/accept",
        "POST",
        bodies={"POST": lambda w: {"openid": w.a_openid, "template_id": w.a_tpl.template_id}},
    ),
    "dashboard/apps/<str:appid>/phone/inbox.json": page(
        lambda w: f"/dashboard/apps/{_app(w)}/phone/inbox.json?openid={w.a_openid}", "GET"
    ),
    "dashboard/templates/<uuid:template_pk>/": page(lambda w: f"/dashboard/templates/{w.a_tpl.pk}/", "GET"),
    "dashboard/templates/<uuid:template_pk>/funnel.json": page(
        lambda w: f"/dashboard/templates/{w.a_tpl.pk}/funnel.json?days=90", "GET"
    ),
    "dashboard/templates/<uuid:template_pk>/rotate": page(
        lambda w: f"/dashboard/templates/{w.a_tpl.pk}/rotate", "POST"
    ),
    "dashboard/templates/<uuid:template_pk>/status": page(
        lambda w: f"/dashboard/templates/{w.a_tpl.pk}/status",
        "POST",
        bodies={"POST": lambda w: {"status": "disabled"}},
    ),
    "dashboard/templates/<uuid:template_pk>/track-opens": page(
        lambda w: f"/dashboard/templates/{w.a_tpl.pk}/track-opens",
        "POST",
        bodies={"POST": lambda w: {"track_opens": "0"}},
    ),
    "dashboard/templates/<uuid:template_pk>/delete": page(
        lambda w: f"/dashboard/templates/{w.a_tpl.pk}/delete", "POST"
    ),
    "dashboard/templates/<uuid:template_pk>/test-send": page(
        lambda w: f"/dashboard/templates/{w.a_tpl.pk}/test-send",
        "POST",
        bodies={"POST": lambda w: {"to": w.a_openid, "data.thing1": "socks"}},
    ),
    "dashboard/pushes/": page(
        lambda w: "/dashboard/pushes/", "GET", markers=lambda w, s: [str(of(w, s, "push").pk)]
    ),
    "dashboard/pushes/<uuid:push_id>/": page(lambda w: f"/dashboard/pushes/{w.a_push.pk}/", "GET"),
    "dashboard/pushes/<uuid:push_id>/progress.json": page(
        lambda w: f"/dashboard/pushes/{w.a_push.pk}/progress.json", "GET"
    ),
    "dashboard/pushes/<uuid:push_id>/cancel": page(
        lambda w: f"/dashboard/pushes/{w.a_push.pk}/cancel", "POST"
    ),
    "dashboard/webhooks/": page(
        lambda w: "/dashboard/webhooks/",
        "GET",
        "POST",
        bodies={"POST": lambda w: {"url": WEBHOOK_URL + "/new", "events": "push.finished"}},
        markers=lambda w, s: [str(of(w, s, "webhook").pk)],
    ),
    "dashboard/webhooks/<uuid:endpoint_id>/": page(lambda w: f"/dashboard/webhooks/{w.a_webhook.pk}/", "GET"),
    "dashboard/webhooks/<uuid:endpoint_id>/update": page(
        lambda w: f"/dashboard/webhooks/{w.a_webhook.pk}/update",
        "POST",
        bodies={"POST": lambda w: {"enabled": "false"}},
    ),
    "dashboard/webhooks/<uuid:endpoint_id>/rotate-secret": page(
        lambda w: f"/dashboard/webhooks/{w.a_webhook.pk}/rotate-secret", "POST"
    ),
    "dashboard/webhooks/<uuid:endpoint_id>/test": page(
        lambda w: f"/dashboard/webhooks/{w.a_webhook.pk}/test", "POST"
    ),
    "dashboard/webhooks/<uuid:endpoint_id>/delete": page(
        lambda w: f"/dashboard/webhooks/{w.a_webhook.pk}/delete", "POST"
    ),
    "dashboard/webhooks/<uuid:endpoint_id>/events/<str:event_id>/resend": page(
        lambda w: f"/dashboard/webhooks/{w.a_webhook.pk}/events/{w.a_event}/resend", "POST"
    ),
    "dashboard/members/": page(
        lambda w: "/dashboard/members/", "GET", markers=lambda w, s: [of(w, s, "owner").email]
    ),
    "dashboard/members/invite": page(
        lambda w: "/dashboard/members/invite",
        "POST",
        bodies={"POST": lambda w: {"email": "new@acme.test", "role": "admin"}},
        markers=nothing_listed,
    ),
    "dashboard/members/<int:membership_id>/role": page(
        lambda w: f"/dashboard/members/{w.a_viewer.pk}/role",
        "POST",
        bodies={"POST": lambda w: {"role": "owner"}},
    ),
    "dashboard/members/<int:membership_id>/remove": page(
        lambda w: f"/dashboard/members/{w.a_viewer.pk}/remove", "POST"
    ),
    "dashboard/keys/": page(
        lambda w: "/dashboard/keys/",
        "GET",
        "POST",
        bodies={"POST": lambda w: {"name": "new key", "scope": "write"}},
        markers=lambda w, s: [f"phk_{of(w, s, 'write_key').prefix}"],
    ),
    "dashboard/keys/<str:prefix>/revoke": page(
        lambda w: f"/dashboard/keys/{w.a_read_key.prefix}/revoke", "POST"
    ),
    # Owner-only: viewers get 403.
    "dashboard/audit/": page(
        lambda w: "/dashboard/audit/",
        "GET",
        markers=lambda w, s: [of(w, s, "marker")],
        viewer_reads=False,
    ),
    # --- routes with a credential of their own --------------------------------------------------------
    "t/<str:token>": Dedicated(
        "the unguessable token in the URL is the credential: a rotated or unknown token is 404, and tenant "
        "B's own trigger URL cannot reach A's users' credits",
        ("test_a_trigger_url_is_its_own_credential",),
    ),
    "t/<str:token>/pushes/<uuid:push_id>": Dedicated(
        "a push is read only through its own template's current trigger URL",
        ("test_a_push_is_read_only_through_its_own_trigger_url",),
    ),
    "sdk/v1/<str:appid>/login": Dedicated(
        "authenticated by a wx.login code, which WeChat issues per app", ("test_a_login_code_is_one_apps",)
    ),
    **{
        f"sdk/v1/<str:appid>/{endpoint}": Dedicated(
            "a signed SDK session per app and openid: tenant B's app's session is refused on A's app",
            ("test_an_sdk_session_is_one_apps",),
        )
        for endpoint in ("formids", "subscriptions", "me", "settings", "identify")
    },
    "sdk/v1/<str:appid>/opens": Dedicated(
        "a signed SDK session per app and openid, and a ref bound to one delivery by a MAC: only the delivery's "
        "own user, through its own app, opens it",
        ("test_an_sdk_session_is_one_apps", "test_an_open_is_only_the_messages_own_users"),
    ),
    **{
        f"sdk/v1/<str:appid>/{endpoint}": Dedicated(
            "a signed SDK session per app and openid, and the inbox read by (app, openid) only: no other "
            "user's messages (same app, another app, another tenant) are shown or marked",
            ("test_an_sdk_session_is_one_apps", "test_an_inbox_is_one_users"),
        )
        for endpoint in ("inbox", "inbox/read")
    },
    "wechat/<str:appid>/events": Dedicated(
        "authenticated by WeChat's signature with the app's own Token (and EncodingAESKey in safe mode)",
        ("test_wechat_events_need_the_apps_own_token",),
    ),
    "dashboard/tenant/switch": Dedicated(
        "chooses the session's current tenant among the user's own memberships",
        ("test_switching_to_a_tenant_needs_a_membership",),
    ),
    "dashboard/keys/created": Dedicated(
        "shows the key just created from the user's own session, scoped to the current tenant",
        ("test_a_new_key_is_shown_only_in_its_own_tenant",),
    ),
    # --- no tenant data ---------------------------------------------------------------------------------
    "": Exempt("landing page; signed-in users are redirected to their own dashboard"),
    "healthz": Exempt("liveness probe, no tenant data"),
    "readyz": Exempt("readiness probe: the state of the database, cache, broker and schema, no tenant data"),
    "metrics": Exempt("Prometheus series without tenant or app labels; METRICS_TOKEN or an allowed network"),
    "api/schema/": Exempt("the public OpenAPI schema"),
    "api/docs/": Exempt("Swagger UI over the public schema"),
    "api/redoc/": Exempt("ReDoc over the public schema"),
    "i18n/setlang/": Exempt("sets the language cookie"),
    "accounts/signup/": Exempt("creates a new account and tenant; reads nobody's data"),
    # Django's auth views (and the throttled login that shadows django.contrib.auth's): a user's own
    # account, no tenant objects.
    "accounts/login/": Exempt("sign-in"),
    "accounts/logout/": Exempt("sign-out"),
    "accounts/password_change/": Exempt("the signed-in user's own password"),
    "accounts/password_change/done/": Exempt("confirmation page"),
    "accounts/password_reset/": Exempt("sends a reset link to the address's owner"),
    "accounts/password_reset/done/": Exempt("confirmation page"),
    "accounts/reset/<uidb64>/<token>/": Exempt("authenticated by the signed reset token in the link"),
    "accounts/reset/done/": Exempt("confirmation page"),
}

EXEMPT_PREFIXES = {
    "admin/": "the Django admin: staff-only operators' console (test_the_admin_is_for_staff_only)",
    "sandbox/wechat/": "the built-in fake WeChat: keyed by AppID like WeChat, no tenant (its _control/ API "
    "is guarded by SANDBOX_CONTROL_TOKEN where the server is reachable by others)",
}


# --- the resolver ----------------------------------------------------------------------------------
def _join(prefix: str, route: str) -> str:
    """As Django joins routes into ResolverMatch.route (the child's leading ^ dropped)."""
    return prefix + route.removeprefix("^") if prefix else route


def walk(resolver: URLResolver | None = None, prefix: str = ""):
    """(full route, name, callback) of every pattern, through includes."""
    for pattern in (resolver or get_resolver()).url_patterns:
        route = _join(prefix, str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            yield from walk(pattern, route)
        else:
            assert isinstance(pattern, URLPattern)
            yield route, pattern.name, pattern.callback


def project_routes() -> set[str]:
    return {route for route, _name, _callback in walk()}


def _exempt_by_prefix(route: str) -> bool:
    return any(route.startswith(prefix) for prefix in EXEMPT_PREFIXES)


def test_every_route_has_an_entry():
    views = {route: f"{route!r} (name {name!r})" for route, name, _callback in walk()}
    routes = {route for route in views if not _exempt_by_prefix(route)}
    missing = [views[route] for route in sorted(routes - set(ROUTES))]
    stale = sorted(set(ROUTES) - routes)
    assert not missing, (
        f"routes without an isolation entry in tests/test_route_isolation.py ROUTES: {missing}"
    )
    assert not stale, f"ROUTES entries whose route no longer exists: {stale}"
    unused_prefixes = [p for p in EXEMPT_PREFIXES if not any(r.startswith(p) for r in project_routes())]
    assert not unused_prefixes, f"EXEMPT_PREFIXES matching no route: {unused_prefixes}"


def test_dedicated_entries_name_tests_of_this_file():
    for route, entry in ROUTES.items():
        if isinstance(entry, Dedicated):
            for name in entry.tests:
                assert name.startswith("test_") and callable(globals().get(name)), (route, name)


def _drf_methods(callback) -> set[str] | None:
    """The methods a DRF view answers (viewset actions or APIView handlers), HEAD/OPTIONS aside."""
    if getattr(callback, "actions", None):
        return {method.upper() for method in callback.actions} - {"HEAD", "OPTIONS"}
    cls = getattr(callback, "cls", None)
    if cls is not None:
        return {m.upper() for m in cls.http_method_names if hasattr(cls, m)} - {"HEAD", "OPTIONS"}
    return None


def test_every_method_of_an_api_route_is_tried():
    """A method added to a covered API route (a new viewset action) fails here until the case tries it."""
    for route, _name, callback in walk():
        entry = ROUTES.get(route)
        methods = _drf_methods(callback)
        if isinstance(entry, Case) and methods is not None:
            assert set(entry.methods) == methods, (route, sorted(methods), entry.methods)


# --- the generated cases ---------------------------------------------------------------------------
def _cases(select: Callable[[Case, str], bool]):
    return [
        pytest.param(route, method, id=f"{method} {route}")
        for route, entry in ROUTES.items()
        if isinstance(entry, Case)
        for method in entry.methods
        if select(entry, method)
    ]


def _case(route: str, w: World) -> tuple[Case, str]:
    """The case and tenant A's URL for it, after checking that URL really is this route."""
    case = ROUTES[route]
    url = case.url(w)
    assert resolve(urlsplit(url).path).route == route, f"{url} is not the route {route}"
    return case, url


def _as(w: World, who: str, case: Case, method: str, url: str, body: dict | None):
    """One request by ``who``: 'b' (B's write key / B's owner), 'a' (A's write key / owner),
    'reader' (A's read key / A's viewer)."""
    if case.auth == KEY:
        raw = {"a": w.a_write, "b": w.b_write, "reader": w.a_read}[who]
        return key_request(raw, method, url, body)
    user = {"a": w.a_owner, "b": w.b_owner, "reader": w.a_viewer.user}[who]
    return page_request(session_of(user), method, url, body)


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), _cases(lambda case, method: case.markers is None))
def test_another_tenant_gets_404_and_changes_nothing(world, route, method):
    case, url = _case(route, world)
    before = snapshot(world)
    response = _as(world, "b", case, method, url, case.body(world, method))
    if case.auth == KEY:
        assert_error(response, 404, "not_found")
    else:
        assert response.status_code == 404, response.status_code
    assert snapshot(world) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "method"),
    _cases(lambda case, method: case.markers not in (None, nothing_listed) and method == "GET"),
)
def test_another_tenants_list_shows_none_of_ours(world, route, method):
    case, url = _case(route, world)
    pages = {side: _as(world, side, case, method, url, None) for side in ("a", "b")}
    assert [page.status_code for page in pages.values()] == [200, 200]
    for side, other in (("a", "b"), ("b", "a")):
        for marker in case.markers(world, side):
            assert marker in pages[side].content.decode(), f"{side}'s own listing should show {marker}"
            assert marker not in pages[other].content.decode(), f"{other}'s listing shows {side}'s {marker}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "method"), _cases(lambda case, method: case.auth == KEY and case.needs_write(method))
)
def test_a_read_key_cannot_write(world, route, method):
    case, url = _case(route, world)
    before = snapshot(world)
    response = _as(world, "reader", case, method, url, case.body(world, method))
    assert_error(response, 403, "permission_denied")
    assert snapshot(world) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "method"),
    _cases(lambda case, method: case.auth == SESSION and (method not in SAFE or not case.viewer_reads)),
)
def test_a_viewer_cannot_change_anything(world, route, method):
    case, url = _case(route, world)
    before = snapshot(world)
    response = _as(world, "reader", case, method, url, case.body(world, method))
    assert response.status_code == 403, response.status_code
    assert snapshot(world) == before


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), _cases(lambda case, method: True))
def test_the_owning_tenant_reaches_it(world, route, method):
    """Sanity for the cases above: the same request by A's write key / owner works (2xx or a redirect) and,
    for a change, changes A's data. A read is also open to A's read key and A's viewers (viewers see
    everything), except the owner-only pages and the reads that need a write key."""
    case, url = _case(route, world)
    if method in SAFE and not case.needs_write(method) and (case.auth == KEY or case.viewer_reads):
        response = _as(world, "reader", case, method, url, None)
        assert response.status_code == 200, (
            "read key / viewer",
            response.status_code,
            response.content[:300],
        )
    before = snapshot(world)
    response = _as(world, "a", case, method, url, case.body(world, method))
    assert response.status_code < 400, (response.status_code, response.content[:300])
    assert method != "GET" or response.status_code == 200, response.status_code
    assert not response.get("Location", "").startswith("/accounts/login"), "not signed in?"
    if method not in SAFE:
        # So that "A's data is unchanged" after B's, the read key's or the viewer's attempt means something.
        assert snapshot(world) != before, "this request changes nothing of A's even for A"


# --- trigger URLs ----------------------------------------------------------------------------------
def _send(token: str, body: dict, query: str = ""):
    return Client().post(f"/t/{token}{query}", data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_a_trigger_url_is_its_own_credential(world):
    w = world
    body = {"to": w.a_openid, "data": {"thing1": "socks"}}
    old = w.a_tpl.get_trigger_token()
    catalogue.rotate_trigger_url(w.a_tpl, actor="test")
    w.a_tpl.refresh_from_db()
    new = w.a_tpl.get_trigger_token()
    before = snapshot(w)

    assert_error(_send(old, body), 404, "not_found")
    assert_error(_send(secrets.token_urlsafe(32), body), 404, "not_found")
    assert_error(Client().get(f"/t/{old}"), 404, "not_found")
    assert snapshot(w) == before

    # B's own trigger URL naming A's user: a push of B's app, which has no credit for that openid.
    theirs = _send(w.b_tpl.get_trigger_token(), body)
    assert theirs.status_code == 202, theirs.content
    assert theirs.json()["no_credit"] == [w.a_openid]
    assert snapshot(w) == before

    ours = _send(new, body, "?dry_run=1")
    assert ours.status_code == 200, ours.content
    assert ours.json()["reachable"] == 1


@pytest.mark.django_db
def test_a_push_is_read_only_through_its_own_trigger_url(world):
    w = world
    path = f"/pushes/{w.a_push.pk}"
    old = w.a_tpl.get_trigger_token()
    ours = Client().get(f"/t/{old}{path}")
    assert ours.status_code == 200 and ours.json()["id"] == str(w.a_push.pk)

    assert_error(Client().get(f"/t/{w.b_tpl.get_trigger_token()}{path}"), 404, "not_found")
    catalogue.rotate_trigger_url(w.a_tpl, actor="test")
    assert_error(Client().get(f"/t/{old}{path}"), 404, "not_found")
    w.a_tpl.refresh_from_db()
    assert Client().get(f"/t/{w.a_tpl.get_trigger_token()}{path}").status_code == 200


# --- the SDK -----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_login_code_is_one_apps(world):
    w = world
    # What wx.login gives the user in B's mini-program, replayed at A's app (same openid: the worst case).
    sandbox.create_user(w.b_app.appid, openid="oSharedOpenid0000000000000001")
    code = sandbox.issue_login_code(w.b_app.appid, "oSharedOpenid0000000000000001")
    before = snapshot(w)
    refused = APIClient().post(f"/sdk/v1/{w.a_app.appid}/login", {"code": code}, format="json")
    assert_error(refused, 400, "invalid_code")
    assert snapshot(w) == before

    ours = APIClient().post(
        f"/sdk/v1/{w.a_app.appid}/login",
        {"code": sandbox.issue_login_code(w.a_app.appid, w.a_openid)},
        format="json",
    )
    assert ours.status_code == 200 and ours.json()["openid"] == w.a_openid


SDK_CALLS = {
    "formids": ("post", lambda w: {"formids": sandbox.issue_formids(w.a_app.appid, w.a_openid, count=1)}),
    "subscriptions": ("post", lambda w: {"results": {w.a_tpl.template_id: "accept"}}),
    "me": ("get", lambda w: None),
    "opens": ("post", lambda w: {"ref": _sent_ref(w)}),
    "settings": ("post", lambda w: {"push_enabled": False}),
    "inbox": ("get", lambda w: None),
    "inbox/read": ("post", lambda w: {"all": True}),
    # A's own tenant signed it: only a session of A's app may use it (B's app's session for the same openid
    # is refused before the hash is even looked at).
    "identify": (
        "post",
        lambda w: {
            "alias": "A-user-9",
            "user_hash": audience.user_hash(w.a_app.get_identity_secret(), "A-user-9"),
        },
    ),
}


def _sent_ref(w: World) -> str:
    """The ref of A's push's delivery to A's user, sent (as the workers leave it)."""
    delivery = Delivery.objects.get(push=w.a_push, openid=w.a_openid)
    if delivery.status != Delivery.Status.SENT:
        Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.SENT)
        Push.objects.filter(pk=w.a_push.pk).update(sent=1, pending=0)
    return make_ref(delivery.pk)


@pytest.mark.django_db
def test_an_open_is_only_the_messages_own_users(world):
    w = world
    ref = _sent_ref(w)
    before = snapshot(w)

    def open_as(app, openid, url_app=None):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Session {issue_session(app, openid)[0]}")
        return client.post(f"/sdk/v1/{(url_app or app).appid}/opens", {"ref": ref}, format="json")

    # another user of A's app; tenant B's app with A's user's openid; B's session on A's URL
    assert_error(open_as(w.a_app, "oA-untagged"), 404, "not_found")
    assert_error(open_as(w.b_app, w.a_openid), 404, "not_found")
    assert_error(open_as(w.b_app, w.a_openid, url_app=w.a_app), 401, "not_authenticated")
    assert snapshot(w) == before

    assert open_as(w.a_app, w.a_openid).json() == {"opened": True}
    after = snapshot(w)
    assert after != before
    assert [p["opened"] for p in after["pushes"] if p["pk"] == w.a_push.pk] == [1]


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", sorted(SDK_CALLS))
def test_an_sdk_session_is_one_apps(world, endpoint):
    w = world
    method, body = SDK_CALLS[endpoint]
    url = f"/sdk/v1/{w.a_app.appid}/{endpoint}"
    assert resolve(url).route == f"sdk/v1/<str:appid>/{endpoint}"

    payload = body(w)  # before the snapshot: building it may set up A's data (a sent delivery to open)

    def call(app):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Session {issue_session(app, w.a_openid)[0]}")
        return getattr(client, method)(url, payload, format="json")

    before = snapshot(w)
    # A session B's app issued, for the very openid A's user has: it says nothing about A's app.
    assert_error(call(w.b_app), 401, "not_authenticated")
    assert snapshot(w) == before
    assert call(w.a_app).status_code == 200
    assert (snapshot(w) != before) is (method == "post"), "A's own session changes what it posts"


@pytest.mark.django_db
def test_an_inbox_is_one_users(world):
    w = world
    (a_message,) = InboxMessage.objects.filter(app=w.a_app)
    # The same openid in B's app (another tenant) and another user of A's app, each with a session.
    b_push = _push(w.b_tpl, w.a_openid)
    b_message = InboxMessage.objects.create(
        app=w.b_app,
        openid=w.a_openid,
        push=b_push,
        delivery_id=Delivery.objects.get(push=b_push).pk,
        sent_at=timezone.now(),
    )

    def client(app, openid):
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Session {issue_session(app, openid)[0]}")
        return c

    before = snapshot(w)
    for app, openid in ((w.a_app, "oA-untagged"), (w.b_app, w.a_openid)):
        url = f"/sdk/v1/{app.appid}/inbox"
        listed = client(app, openid).get(url).json()
        assert str(a_message.pk) not in [m["id"] for m in listed["results"]]
        # Marking A's user's message by its id changes nothing of A's.
        marked = client(app, openid).post(url + "/read", {"ids": [str(a_message.pk)]}, format="json")
        assert marked.status_code == 200
    assert client(w.a_app, "oA-untagged").get(f"/sdk/v1/{w.a_app.appid}/inbox").json()["results"] == []
    assert [
        m["id"] for m in client(w.b_app, w.a_openid).get(f"/sdk/v1/{w.b_app.appid}/inbox").json()["results"]
    ] == [str(b_message.pk)]
    assert snapshot(w) == before
    # A's user sees exactly their own message.
    mine = client(w.a_app, w.a_openid).get(f"/sdk/v1/{w.a_app.appid}/inbox").json()
    assert [m["id"] for m in mine["results"]] == [str(a_message.pk)] and mine["unread"] == 1


# --- WeChat's message push -------------------------------------------------------------------------
def wx_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def wx_encrypt(message: str, appid: str, encoding_aes_key: str) -> str:
    key = base64.b64decode(encoding_aes_key + "=")
    plain = b"0123456789abcdef" + struct.pack(">I", len(message.encode())) + message.encode() + appid.encode()
    pad = 32 - len(plain) % 32
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()


@pytest.mark.django_db
def test_wechat_events_need_the_apps_own_token(world):
    w = world
    url = f"/wechat/{w.a_app.appid}/events"
    assert resolve(url).route == "wechat/<str:appid>/events"
    timestamp, nonce = str(int(time.time())), "n0nce"
    event = json.dumps(
        {
            "ToUserName": "gh_0123456789ab",
            "FromUserName": w.a_openid,
            "CreateTime": int(timestamp),
            "MsgType": "event",
            "Event": "subscribe_msg_popup_event",
            "List": {"TemplateId": w.a_tpl.template_id, "SubscribeStatusString": "accept", "PopupScene": "0"},
        }
    )

    def echo(token):
        query = {"signature": wx_signature(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
        return Client().get(url, {**query, "echostr": "hello"})

    def plain(token):
        query = urlencode(
            {"signature": wx_signature(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
        )
        return Client().post(f"{url}?{query}", data=event, content_type="application/json")

    def safe(app):
        encrypted = wx_encrypt(event, w.a_app.appid, app.get_events_aes_key())
        query = {
            "encrypt_type": "aes",
            "msg_signature": wx_signature(app.events_token, timestamp, nonce, encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        return Client().post(
            f"{url}?{urlencode(query)}",
            data=json.dumps({"ToUserName": "gh_0123456789ab", "Encrypt": encrypted}),
            content_type="application/json",
        )

    before = snapshot(w)
    # Signed (and encrypted) correctly, with tenant B's app's Token and EncodingAESKey.
    assert_error(echo(w.b_app.events_token), 403, "invalid_signature")
    assert_error(plain(w.b_app.events_token), 403, "invalid_signature")
    assert_error(safe(w.b_app), 403, "invalid_signature")
    assert snapshot(w) == before

    assert echo(w.a_app.events_token).content == b"hello"
    assert plain(w.a_app.events_token).content == b"success"
    assert safe(w.a_app).content == b"success"  # the same event again: stored once
    assert InboundEvent.objects.filter(app=w.a_app, event="subscribe_msg_popup_event").count() == 1


# --- the dashboard's own credentials ---------------------------------------------------------------
@pytest.mark.django_db
def test_switching_to_a_tenant_needs_a_membership(world):
    w = world
    theirs = session_of(w.b_owner)
    assert theirs.post("/dashboard/tenant/switch", {"tenant": w.a.pk}).status_code == 404
    page = theirs.get("/dashboard/").content.decode()
    assert w.b_app.appid in page and w.a_app.appid not in page

    # Once B's owner is a member of A too, the same switch works.
    Membership.objects.create(tenant=w.a, user=w.b_owner, role=Membership.Role.VIEWER)
    assert theirs.post("/dashboard/tenant/switch", {"tenant": w.a.pk}).status_code == 302
    assert w.a_app.appid in theirs.get("/dashboard/").content.decode()


@pytest.mark.django_db
def test_a_new_key_is_shown_only_in_its_own_tenant(world):
    w = world
    assert session_of(w.b_owner).get("/dashboard/keys/created").url == "/dashboard/keys/"

    # A's owner is an admin of B too: a key made in A, then the session switched to B before showing it.
    Membership.objects.create(tenant=w.b, user=w.a_owner, role=Membership.Role.ADMIN)
    for switch_first, expected in ((True, 404), (False, 200)):
        owner = session_of(w.a_owner)  # current tenant: A (Acme sorts first)
        made = owner.post("/dashboard/keys/", {"name": "ci", "scope": "write"})
        assert made.status_code == 302 and made.url == "/dashboard/keys/created"
        raw = owner.session[NEW_KEY_SESSION_KEY]["raw"]
        if switch_first:
            assert owner.post("/dashboard/tenant/switch", {"tenant": w.b.pk}).status_code == 302
        shown = owner.get("/dashboard/keys/created")
        assert shown.status_code == expected
        assert (raw in shown.content.decode()) is (expected == 200)


@pytest.mark.django_db
def test_the_admin_is_for_staff_only(world):
    """Supports the ``admin/`` exemption: a tenant's owner is no operator."""
    owner = session_of(world.a_owner)
    for path in (
        "/admin/",
        "/admin/tenants/miniprogram/",
        f"/admin/tenants/miniprogram/{world.b_app.pk}/change/",
    ):
        response = owner.get(path)
        assert response.status_code == 302 and response.url.startswith("/admin/login/"), path
    staff = get_user_model().objects.create_superuser("ops@pushhub.test", "ops@pushhub.test", "x")
    assert session_of(staff).get("/admin/tenants/miniprogram/").status_code == 200
