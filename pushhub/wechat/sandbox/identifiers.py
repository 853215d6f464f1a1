"""Identifiers the sandbox makes up, shaped like WeChat's: access tokens, openids, formIds and prepay_ids,
template ids, session keys.

Its own module because both faces of the sandbox mint them: the control side (users, formIds, templates)
and the WeChat side (tokens, jscode2session). It imports no other part of the sandbox but its models.
"""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
from datetime import datetime

from django.utils import timezone

from .models import SandboxFormId

# Beijing time: prepay_ids carry a timestamp in it, and WeChat's daily quotas reset at its midnight.
BEIJING = timezone.get_fixed_timezone(8 * 60)


def new_access_token() -> str:
    """Shaped like WeChat's: a version number, ``_``, ~130 URL-safe characters."""
    return f"{random.randint(70, 99)}_{secrets.token_urlsafe(96)}"


def new_openid(appid: str) -> str:
    """28 characters starting with ``o``; like real openids, those of one app share their first six."""
    prefix = base64.urlsafe_b64encode(hashlib.sha256(appid.encode()).digest()).decode()[:5]
    return "o" + prefix + secrets.token_urlsafe(17)[:22]


def new_formid_value(kind: str, now: datetime) -> str:
    """formId: 32 lowercase hex; prepay_id: ``wx`` + 14-digit timestamp + 20 hex (WeChat Pay's shape)."""
    if kind == SandboxFormId.PREPAY:
        return "wx" + now.astimezone(BEIJING).strftime("%Y%m%d%H%M%S") + secrets.token_hex(10)
    return secrets.token_hex(16)


def new_template_id() -> str:
    return secrets.token_urlsafe(32)


def new_session_key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode()
