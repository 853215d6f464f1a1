"""Keep trigger tokens out of the logs. A trigger URL (``/t/{token}``) is a credential, and both Django
(``Bad Request: /t/…`` for every 4xx) and gunicorn's access log write request paths."""

from __future__ import annotations

import logging
import re

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
