"""The URL map: every name means one route, so ``reverse()`` and ``{% url %}`` build the link they say."""

from __future__ import annotations

from collections import defaultdict

from django.urls import URLPattern, URLResolver, get_resolver


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
