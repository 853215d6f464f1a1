"""Which subscribe template ids an app has, without formids importing templates_app.

Dependencies point templates_app → formids, so the catalogue registers itself here (in its
AppConfig.ready) and formids asks through this hook. With no catalogue registered, every id is known.
"""

from __future__ import annotations

from collections.abc import Callable

from tenants.models import MiniProgram

_provider: Callable[[MiniProgram], set[str]] | None = None


def register_subscribe_template_provider(provider: Callable[[MiniProgram], set[str]]) -> None:
    global _provider
    _provider = provider


def known_subscribe_template_ids(app: MiniProgram) -> set[str] | None:
    """The app's subscribe template ids, or None when no catalogue is installed (accept any)."""
    return _provider(app) if _provider is not None else None
