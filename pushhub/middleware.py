from django.conf import settings
from django.http import HttpResponseBadRequest

from pushhub.api import error_response


class ApiBodyLimitMiddleware:
    """Refuse oversized bodies on the public API paths with the contract's 413 before anyone reads them."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(settings.API_PATH_PREFIXES):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > settings.API_BODY_LIMIT:
                return error_response(
                    413, "payload_too_large", f"Request body is over {settings.API_BODY_LIMIT // 1024} KiB."
                )
        return self.get_response(request)


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
