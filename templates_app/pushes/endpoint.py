"""What both send endpoints share: rate limits, body parsing, dry run, idempotency, the 202 answer.

``POST /t/{token}`` (the token is the credential) and ``POST /api/v1/templates/{id}/pushes`` (a write key)
take the same body and give the same answer; only authentication and the status link differ. The
dashboard's test send goes through here too.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings

from pushhub import idempotency, ratelimit
from pushhub.api import ApiError
from templates_app.models import Push, Template
from templates_app.pushes import recipients
from templates_app.pushes.request import ensure_sendable, parse_send_request
from templates_app.pushes.start import start_push


def send(
    template: Template,
    body,
    *,
    dry_run: bool,
    idempotency_key: str,
    created_by: str,
    status_url: Callable[[Push], str],
) -> tuple[int, dict]:
    """(HTTP status, answer) for a send request on ``template``."""
    ensure_sendable(template)
    # Both limits in one round trip, the template's first (over it, the tenant's is not counted).
    ratelimit.check_all(
        [
            (
                f"send:template:{template.pk}",
                settings.TRIGGER_RATE_PER_TEMPLATE,
                60,
                "pushes for this template",
            ),
            (
                f"send:tenant:{template.app.tenant_id}",
                settings.TRIGGER_RATE_PER_TENANT,
                60,
                "pushes for this tenant",
            ),
        ]
    )
    idempotency.check_key(idempotency_key)
    request = parse_send_request(template, body)
    if dry_run:
        return 200, recipients.dry_run(template, request)
    started = start_push(
        template,
        request,
        created_by=created_by,
        status_url=status_url,
        idempotency_key=idempotency_key,
        fingerprint=idempotency.body_fingerprint(body) if idempotency_key else "",
    )
    return (200 if started.replay else 202), started.body


def is_dry_run(query) -> bool:
    """``?dry_run=1`` (or true/yes); absent, empty, 0, false or no: a real send. Anything else is a 400: a
    mistyped ``?dry_run=ture`` must not send for real."""
    value = query.get("dry_run", "").lower()
    if value in {"1", "true", "yes"}:
        return True
    if value in {"", "0", "false", "no"}:
        return False
    raise ApiError(400, "validation_error", "dry_run must be 1/true or 0/false.", field="dry_run")
