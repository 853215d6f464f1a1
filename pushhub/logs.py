"""Keep trigger tokens out of the logs. A trigger URL (``/t/{token}``) is a credential, and both Django
(``Bad Request: /t/…`` for every 4xx) and gunicorn's access log write request paths."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from datetime import UTC, datetime

from gunicorn.glogging import Logger

TRIGGER_PATH = re.compile(r"/t/[A-Za-z0-9_\-]{8,}")
REDACTED = "/t/[token]"


def redact(text: str) -> str:
    return TRIGGER_PATH.sub(REDACTED, text)


class RedactTriggerTokens(logging.Filter):
    """On the ``django.request`` and ``django.server`` loggers (settings.LOGGING): the path in each record's
    message and arguments loses its token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class GunicornLogger(Logger):
    """gunicorn's logger with every access-log field redacted (the request line, the path, the raw URI, the
    referer...). Procfile: ``--logger-class pushhub.logs.GunicornLogger``."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}


# --- what a log line is about: request id, tenant, app, push ------------------------------------------
# Bound by the request-id middleware (and per Celery task), then by whoever learns the tenant, the app or the
# push (API-key authentication, the SDK's app, the dashboard, a trigger URL, the push a task works on).
CONTEXT_FIELDS = ("request_id", "tenant", "app", "push")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "pushhub_log_context", default=None
)


def bind(**values) -> None:
    """Add ``values`` (CONTEXT_FIELDS) to what this request's or task's log lines carry."""
    _context.set({**(_context.get() or {}), **{k: str(v) for k, v in values.items() if v is not None}})


def clear() -> None:
    _context.set({})


def context() -> dict[str, str]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Puts the bound context on every record (``record.request_id`` …, None when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, bound.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """``LOG_FORMAT=json``: one JSON object per line — UTC time, level, logger, message, the context fields
    that are known, and the traceback when there is one. Trigger tokens are redacted in the message."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{8,64}")


class RequestIdMiddleware:
    """Each request gets an id (the caller's ``X-Request-ID`` when it is a sane one, else a new one), bound
    for its log lines and sent back in ``X-Request-ID``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # A new context per request (not cleared at the end: Django logs a 4xx/5xx after the middleware
        # chain has returned, and that line belongs to this request too).
        clear()
        bind(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response
