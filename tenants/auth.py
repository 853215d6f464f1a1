"""API-key authentication and scope checks for /api/v1.

``request.auth`` is the ApiKey; its tenant scopes every query (see tenants.viewsets).
"""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission

from pushhub import logs
from tenants import services
from tenants.models import ApiKey


class ApiKeyPrincipal:
    """What ``request.user`` is for an API-key request: the key's tenant, not a person."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key: ApiKey):
        self.key = key
        self.tenant = key.tenant

    def __str__(self) -> str:
        return f"key:phk_{self.key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = get_authorization_header(request)
        if not header:
            return None
        try:
            scheme, _, raw = header.decode("ascii").partition(" ")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Authorization header is not ASCII.") from None
        if scheme.lower() != "bearer" or not raw.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        key = services.authenticate_api_key(raw.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        logs.bind(tenant=key.tenant_id)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when the key is missing or wrong.
        return 'Bearer realm="pushhub"'


class HasApiKeyScope(BasePermission):
    """Any active key may read; writing needs a write key. Views may demand write for a GET too
    (``requires_write_key = True``, e.g. the access-token proxy)."""

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <api key>'.")
        needs_write = request.method not in SAFE_METHODS or getattr(view, "requires_write_key", False)
        if needs_write and not key.can_write:
            raise exceptions.PermissionDenied("This API key is read-only; use a write key.")
        return True


def actor_for(request) -> str:
    """Audit actor for a request (DRF's or a plain dashboard one): the API key prefix or the user."""
    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey):
        return f"key:phk_{key.prefix}"
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.get_username()}"
    return "anonymous"
