"""Which webhook URLs PushHub will call: the SSRF guard.

A tenant's URL is refused (``invalid_url``) unless it is http(s) with a host, and, in production, https. Its host
must resolve only to public addresses: loopback, private, link-local, multicast, reserved, shared and unspecified
ones are refused, at registration and again before every attempt (DNS can change between the two). The
attempt then connects to the very address that was checked (``transport``), so a second lookup cannot swap it.
``WEBHOOK_ALLOW_PRIVATE=1`` lifts the address check for development and tests.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from pushhub.api import ApiError

URL_MAX_LENGTH = 2000


class BlockedUrl(Exception):
    """The URL may not be called; ``str()`` says why, in words for the tenant."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to say to it (``host``, ``path``)."""

    scheme: str
    host: str  # as written in the URL (the Host header and the TLS server name)
    port: int
    path: str  # path and query
    address: str  # the checked IP to connect to


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (every A and AAAA record), or the literal address itself."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BlockedUrl(f"the host {host!r} does not resolve") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_private or ip.is_link_local)


def parse(url: object) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a well-formed webhook URL; BlockedUrl otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise BlockedUrl("url must be an http(s) URL")
    if len(url) > URL_MAX_LENGTH:
        raise BlockedUrl(f"url must be at most {URL_MAX_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise BlockedUrl("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BlockedUrl(f"url is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.hostname:
        raise BlockedUrl("url must be an http(s) URL with a host")
    if settings.PRODUCTION and scheme != "https" and not settings.WEBHOOK_ALLOW_PRIVATE:
        raise BlockedUrl("url must use https")
    if parts.username is not None or parts.password is not None:
        raise BlockedUrl("url must not carry a user name or password")
    if parts.fragment:
        raise BlockedUrl("url must not have a #fragment")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


def check(url: object) -> Target:
    """The URL checked and resolved to one address it may be called at; BlockedUrl otherwise."""
    scheme, host, port, path = parse(url)
    addresses = resolve(host, port)
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        blocked = [a for a in addresses if not is_public(a)]
        if blocked:
            raise BlockedUrl(f"the host {host!r} resolves to a non-public address ({blocked[0]})")
    if not addresses:
        raise BlockedUrl(f"the host {host!r} does not resolve")
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])


def validate_url(url: object) -> str:
    """For the API and the dashboard: the URL, or 400 ``invalid_url``."""
    try:
        check(url)
    except BlockedUrl as exc:
        raise ApiError(400, "invalid_url", str(exc), field="url") from None
    return url  # type: ignore[return-value]
