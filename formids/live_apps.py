"""The live app behind an SDK call's AppID, from a short in-process cache (README "SDK endpoints").

Every SDK call (login, formIds, subscriptions, me, identify, settings, opens, the inbox) starts by finding the
live (not deleted) app of the AppID in its URL. That row changes rarely, and reading it was one of an upload's
round trips, so each process keeps what it read for ``SDK_APP_CACHE_SECONDS`` (default 5 s):

- A change saved in this process (``save()`` or ``delete()`` of a MiniProgram: registration, edits, a new
  secret, rotation, deletion) empties this process's cache at once (``post_save`` / ``post_delete``).
- Other processes (the other gunicorn workers, a dashboard in another process) see it within
  ``SDK_APP_CACHE_SECONDS``: a deleted app is refused (404), a changed ``credit_source`` or ``inbox_enabled``
  followed, at most that long after the change. 0 turns the cache off.

Only found apps are kept (an unknown AppID is asked for again, so a newly registered app is served at once),
and each caller gets its own copy of the cached row, so nothing one request sets on it leaks into another.
"""

from __future__ import annotations

import copy
import threading
import time

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from tenants.models import MiniProgram
from tenants.services import APPID_RE

MAX_ENTRIES = 10_000  # AppIDs kept per process at most (a full cache starts again empty)

_lock = threading.Lock()
_apps: dict[str, tuple[float, MiniProgram]] = {}  # appid → (monotonic time read, the row)


def live_app(appid: str) -> MiniProgram | None:
    """The live app with this AppID (a private copy), or None for anything else (malformed ids included)."""
    if not isinstance(appid, str) or not APPID_RE.fullmatch(appid):
        return None
    ttl = settings.SDK_APP_CACHE_SECONDS
    now = time.monotonic()
    entry = _apps.get(appid)
    if entry is not None and now - entry[0] < ttl:
        return copy.copy(entry[1])
    app = MiniProgram.objects.live().filter(appid=appid).first()
    if app is not None and ttl > 0:
        with _lock:
            if len(_apps) >= MAX_ENTRIES:
                _apps.clear()
            _apps[appid] = (now, app)
        return copy.copy(app)
    return app


def forget_all() -> None:
    """Empty this process's cache (tests between cases)."""
    with _lock:
        _apps.clear()


def _app_changed(**kwargs) -> None:
    """A MiniProgram was saved or deleted in this process: forget now, and again once it commits (a request
    of another thread may have read and kept the old row in between)."""
    forget_all()
    transaction.on_commit(forget_all)


def connect() -> None:
    """Called once from FormidsConfig.ready()."""
    post_save.connect(_app_changed, sender=MiniProgram, dispatch_uid="formids.live_apps.saved")
    post_delete.connect(_app_changed, sender=MiniProgram, dispatch_uid="formids.live_apps.deleted")
