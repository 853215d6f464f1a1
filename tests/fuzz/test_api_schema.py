"""Schemathesis against our own OpenAPI schema: every /api/v1 and /sdk/v1 operation, valid credentials.

The schema is loaded from ``/api/schema/`` of the Django app in-process (WSGI), and the fuzzed requests go
the same way. The tenant's app is a sandbox app and the sandbox is served over real HTTP by the live server
(``sandbox_base``), so the operations that call WeChat (access-token, template sync, SDK login, registering
or switching to a non-sandbox app) get WeChat's real answers; hence a transactional database (the live
server's thread must see the seeded rows).

Path parameters are what schemathesis generates or, for about half of the cases, the seeded tenant's own
objects (its app, a template, a push, a user), so fuzzed bodies and queries reach the real code paths.

Gate: no 5xx, and every error answer JSON in the contract's shape (``error_format``). On top, conformance
to the schema: documented status codes, content types, headers and response bodies; schema-violating
requests rejected (4xx); auth actually enforced (``ignored_auth`` retries without and with a wrong
credential); unsupported methods answered 405. Not checked: ``positive_data_acceptance`` (schema-valid
requests must succeed), which cannot hold here: what a send accepts depends on the template's own fields,
and most generated ids, codes and secrets are rightly refused by the API or by WeChat.

``PUSHHUB_FUZZ_EXAMPLES=300 pytest tests/fuzz`` fuzzes deeper (and randomly: a new seed per run).
"""

from __future__ import annotations

import os
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

import hypothesis
import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.utils import timezone
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from formids.sdk_auth import issue_session
from formids.services import add_formids, add_subscribe_credits, touch_user
from templates_app import catalogue
from tenants import services as tenant_services
from tests.conftest import api_client, random_appid, random_secret

# Generated examples per operation (the coverage phase adds its own deterministic boundary cases on top).
# The default keeps the file under a minute (SQLite or PostgreSQL, 2 cores), derandomized: a failure comes
# back with the same example every run.
DEEP_EXAMPLES = int(os.environ.get("PUSHHUB_FUZZ_EXAMPLES", "0"))
MAX_EXAMPLES = DEEP_EXAMPLES or 25

schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())
# Credentials are the test's own valid ones (see test_api): no generated or missing Authorization headers.
schema.config.generation.update(
    max_examples=MAX_EXAMPLES, deterministic=not DEEP_EXAMPLES, with_security_parameters=False
)

# operation label -> HTTP status -> answers (printed at the end of the run by tests/fuzz/conftest.py)
CALLS: dict[str, Counter[int]] = defaultdict(Counter)


@dataclass
class World:
    """One tenant's objects, seeded per test: what the real path parameters point at."""

    write_key: str
    appid: str
    session: str  # an SDK session for OPENID of the app
    openid: str
    templates: list[str]
    push: str


OPENID = "oFuzzUser000000000000000001"


@pytest.fixture
def world(settings, sandbox_base):
    """A tenant with a write key, a sandbox app, a formId and a subscribe template, users with credits and
    one push; rate limits raised out of the way (a fuzz run sends hundreds of requests a minute per key,
    user and address, which would otherwise turn into 429s that test nothing)."""
    settings.SDK_RATE_PER_IP = 10**6
    settings.SDK_RATE_PER_OPENID = 10**6
    settings.TRIGGER_RATE_PER_TEMPLATE = 10**6
    settings.TRIGGER_RATE_PER_TENANT = 10**6

    tenant = tenant_services.create_tenant("Fuzz", "owner@fuzz.test", password="correct horse battery").tenant
    key = tenant_services.create_api_key(tenant, "write", name="fuzz")[1]
    app = tenant_services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Fuzz shop", sandbox_app=True
    )
    formid_template = catalogue.create_template(
        app,
        kind="formid",
        template_id="FORMID_TPL_1",
        title="Order paid",
        fields=[{"key": "keyword1", "name": "Order"}, {"key": "keyword2", "name": "Item"}],
        actor="fuzz",
    )
    subscribe_template = catalogue.create_template(
        app,
        kind="subscribe",
        template_id="SUB_TPL_1",
        title="Shipped",
        fields=[{"key": "thing1", "name": "Item"}, {"key": "time2", "name": "When"}],
        actor="fuzz",
    )
    now = timezone.now()
    for n in range(3):
        user = touch_user(app, f"oFuzzUser00000000000000000{n + 1}")
        add_formids(app, user, [f"fuzzformid{n}{i:020d}" for i in range(3)], now=now - timedelta(days=n))
        add_subscribe_credits(app, user, ["SUB_TPL_1"], source="sdk")
    response = api_client(key).post(
        f"/api/v1/templates/{formid_template.pk}/pushes",
        {"to": [OPENID, "oNobody"], "data": ["A123", "Keyboard"]},
        format="json",
    )
    assert response.status_code == 202, response.content
    return World(
        write_key=key,
        appid=app.appid,
        session=issue_session(app, OPENID)[0],
        openid=OPENID,
        templates=[str(formid_template.pk), str(subscribe_template.pk)],
        push=response.json()["push_id"],
    )


def point_at_the_world(case, world: World) -> None:
    """About half of the cases whose path parameters are valid get the seeded objects' ids instead, chosen
    by a hash of the case (so a case hypothesis replays is the same case). Cases generated to be invalid in
    their path keep it: swapping in a valid id would hide what they test."""
    params = case.path_parameters
    path_info = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
    if not params or (path_info is not None and not path_info.mode.is_positive):
        return
    digest = zlib.crc32(repr((case.method, params, case.query, case.body)).encode())
    if digest % 2:
        return
    if "appid" in params:
        params["appid"] = world.appid
    if "openid" in params:
        params["openid"] = world.openid
    if "id" in params:
        is_template = case.path.startswith("/api/v1/templates/")
        params["id"] = world.templates[(digest >> 1) % 2] if is_template else world.push


def error_format(ctx, response, case):
    """Every error answer with a JSON body is ``{"error": {"code": str, "message": str, "field"?: str}}``."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answered with {content_type!r}"
    )
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the error shape: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"error is not an object: {error!r}"
    assert isinstance(error.get("code"), str) and error["code"], f"error.code is not a string: {error!r}"
    assert isinstance(error.get("message"), str) and error["message"], (
        f"error.message is not a string: {error!r}"
    )
    if "field" in error:
        assert isinstance(error["field"], str) and error["field"], f"error.field is not a string: {error!r}"
    return None


CHECKS = [
    not_a_server_error,
    error_format,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
]


@schema.parametrize()
@pytest.mark.django_db(transaction=True)
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=not DEEP_EXAMPLES,
    database=None,
    # The seeded world is per operation, not per example: examples build on each other's changes (a
    # deleted template stays deleted), which is what a real client's sequence of calls does too.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_api(case, world):
    auth = f"Session {world.session}" if case.path.startswith("/sdk/") else f"Bearer {world.write_key}"
    point_at_the_world(case, world)
    response = case.call(headers={"Authorization": auth})
    CALLS[case.operation.label][response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers={"Authorization": auth})


class _Answer:
    """Just what error_format reads of a response."""

    def __init__(self, status_code: int, content_type: str, body):
        self.status_code, self.headers, self._body = status_code, {"content-type": [content_type]}, body

    def json(self):
        return self._body


@pytest.mark.parametrize(
    "answer",
    [
        _Answer(404, "text/html", "<h1>Not Found</h1>"),
        _Answer(400, "application/json", {"detail": "Bad request."}),
        _Answer(400, "application/json", {"error": "validation_error"}),
        _Answer(400, "application/json", {"error": {"code": "validation_error"}}),
        _Answer(400, "application/json", {"error": {"code": 400, "message": "Bad."}}),
        _Answer(400, "application/json", {"error": {"code": "x", "message": "Bad.", "field": ["a"]}}),
        _Answer(500, "application/json", {"error": {"code": "x", "message": "Bad."}, "detail": "x"}),
    ],
)
def test_the_error_format_check_refuses_other_shapes(answer):
    with pytest.raises(AssertionError):
        error_format(None, answer, None)
    ok = _Answer(
        answer.status_code, "application/json", {"error": {"code": "x", "message": "Bad.", "field": "a"}}
    )
    assert error_format(None, ok, None) is None
