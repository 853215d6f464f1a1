from django.conf import settings
from django.contrib.auth import middleware as django_auth
from django.contrib.messages import middleware as django_messages
from django.contrib.sessions import middleware as django_sessions
from django.http import HttpResponseBadRequest
from django.middleware import locale as django_locale

from pushhub.api import error_response


class ApiBodyLimitMiddleware:
    """Refuse oversized bodies on the public API paths with the contract's 413 before anyone reads them.

    The limit is API_BODY_LIMIT (64 KiB), or the view's own ``body_limit`` when it declares one (the bulk
    tagging of 10,000 members: API_BULK_BODY_LIMIT). A body over the larger limit is refused before the URL
    is even resolved; one between the two once the view is known (``process_view``, still before it runs)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.largest = max(settings.API_BODY_LIMIT, settings.API_BULK_BODY_LIMIT)

    def __call__(self, request):
        if request.path.startswith(settings.API_PATH_PREFIXES) and _body_length(request) > self.largest:
            return _too_large(self.largest)
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.path.startswith(settings.API_PATH_PREFIXES):
            return None
        view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
        limit = getattr(view_class, "body_limit", None) or settings.API_BODY_LIMIT
        return _too_large(limit) if _body_length(request) > limit else None


def _body_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _too_large(limit: int):
    size = f"{limit // 1024 // 1024} MiB" if limit % (1024 * 1024) == 0 else f"{limit // 1024} KiB"
    return error_response(413, "payload_too_large", f"Request body is over {size}.")


class NulInUrlMiddleware:
    """Refuse a NUL character in the path or query (``%00`` decodes to one): no lookup by it can succeed,
    and PostgreSQL refuses it in any query, which would be a 500. The contract's JSON 400 on the public API
    paths, a plain 400 on the dashboard's."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()
        ):
            if request.path.startswith(settings.API_PATH_PREFIXES):
                return error_response(400, "validation_error", "The URL must not contain NUL characters.")
            return HttpResponseBadRequest(
                "The URL must not contain NUL characters.", content_type="text/plain"
            )
        return self.get_response(request)


class ApiNotFoundMiddleware:
    """A 404 under the public API paths is the contract's JSON ``not_found`` whatever the settings.

    handler404 (pushhub.api) gives it when DEBUG is off; with DEBUG on, Django answers a path that no route
    matches (a typo'd route, a non-UUID id where the route says ``<uuid:…>``) with its HTML technical page
    and never calls handler404. Outside CommonMiddleware, whose APPEND_SLASH redirect of a 404 comes first
    (``/api/schema`` still redirects to ``/api/schema/``)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code == 404
            and request.path.startswith(settings.API_PATH_PREFIXES)
            and response.get("Content-Type", "").partition(";")[0] != "application/json"
        ):
            return error_response(404, "not_found", "Not found.")
        return response


# --- the browser's middleware, skipped on the machine paths ----------------------------------------------
class _SkippedOnMachinePaths:
    """Runs the wrapped Django middleware everywhere but on settings.MACHINE_PATH_PREFIXES.

    What calls those paths is a program, never a browser: the SDK (a session token in a header), a trigger
    URL's caller, WeChat's servers. No cookie session, signed-in user or flash message, and their answers are
    in one language (English): sessions, locale, authentication and messages only cost them CPU (the locale
    alone, 50 µs a request: Accept-Language parsed, a translation activated, Vary patched). The security
    headers (SecurityMiddleware, X-Frame-Options) stay on every answer. These subclasses keep the places of
    Django's classes in MIDDLEWARE, so Django's and the admin's checks still find them."""

    def __call__(self, request):
        if request.path_info.startswith(settings.MACHINE_PATH_PREFIXES):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_SkippedOnMachinePaths, django_sessions.SessionMiddleware):
    pass


class LocaleMiddleware(_SkippedOnMachinePaths, django_locale.LocaleMiddleware):
    pass


class AuthenticationMiddleware(_SkippedOnMachinePaths, django_auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(_SkippedOnMachinePaths, django_messages.MessageMiddleware):
    pass
