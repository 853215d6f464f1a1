from django.conf import settings

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
