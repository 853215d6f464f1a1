"""API plumbing shared by every app: the one error shape, cursor pagination, JSON 404/500 pages.

Every error leaving /api, /sdk, /t or /wechat is ``{"error": {"code", "message", "field"?, ...}}``
with the right HTTP status (../shared/API.md "Conventions").
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions, pagination, serializers
from rest_framework.response import Response
from rest_framework.views import set_rollback

from pushhub.wechat.errors import WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error with a contract code. Raise it from views and services that answer HTTP."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        self.status_code = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail=message, code=code)

    def payload(self) -> dict:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return {"error": body}


def error_response(status: int, code: str, message: str, field: str | None = None, **extra) -> JsonResponse:
    return JsonResponse(ApiError(status, code, message, field, **extra).payload(), status=status)


def api_error_response(error: ApiError) -> JsonResponse:
    """An ApiError as a plain Django response (views outside DRF)."""
    response = JsonResponse(error.payload(), status=error.status_code)
    for name, value in error.headers.items():
        response[name] = value
    return response


def _first_validation_error(detail, prefix: str = "") -> tuple[str | None, str, str]:
    """Walk DRF's nested ValidationError detail; return (field, message, code) of the first error."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                name = prefix or None
            return _first_validation_error(value, name or "")
    if isinstance(detail, list) and detail:
        for index, item in enumerate(detail):
            if item:
                if isinstance(item, dict | list):
                    return _first_validation_error(item, f"{prefix}[{index}]" if prefix else str(index))
                return _first_validation_error(item, prefix)
    code = getattr(detail, "code", None) or "invalid"
    return (prefix or None, str(detail), code)


_STATUS_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


def exception_handler(exc, context) -> Response | None:
    """DRF exception handler producing the contract's error shape for every failure."""
    headers: dict[str, str] = {}
    if isinstance(exc, Http404):
        exc = ApiError(404, "not_found", "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = ApiError(403, "permission_denied", "You do not have permission to perform this action.")
    elif isinstance(exc, RequestDataTooBig):
        exc = ApiError(413, "payload_too_large", "Request body is too large.")

    if isinstance(exc, ApiError):
        response = Response(exc.payload(), status=exc.status_code)
        headers.update(exc.headers)
    elif isinstance(exc, exceptions.ParseError):
        response = Response(
            {"error": {"code": "invalid_json", "message": f"Request body is not valid JSON: {exc.detail}"}},
            status=400,
        )
    elif isinstance(exc, exceptions.ValidationError):
        field, message, code = _first_validation_error(exc.detail)
        # Serializer validators may name a contract code (e.g. invalid_appid) as the error code.
        code = (
            code if code not in {"invalid", "required", "null", "blank", "max_length", "min_length"} else None
        )
        body = {"code": code or "validation_error", "message": message}
        if field:
            body["field"] = field
        response = Response({"error": body}, status=400)
    elif isinstance(exc, exceptions.APIException):
        code = next((c for cls, c in _STATUS_CODES.items() if isinstance(exc, cls)), None)
        code = code or (exc.get_codes() if isinstance(exc.get_codes(), str) else "error")
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        response = Response({"error": {"code": code, "message": str(exc.detail)}}, status=exc.status_code)
    else:
        return None  # a real bug: let Django log it and answer 500 through handler500
    set_rollback()
    for name, value in headers.items():
        response[name] = value
    return response


# --- WeChat failures -------------------------------------------------------------------------------
def wechat_failure(
    exc: WeChatError | WeChatUnavailable,
    *,
    refused: str = "WeChat answered with an error.",
    unreachable: str = "Could not reach WeChat ({reason}).",
) -> ApiError:
    """The contract's 502 for a WeChat call that failed: ``wechat_error`` with WeChat's errcode and errmsg
    when it answered one, ``wechat_unreachable`` when no usable answer came (``{reason}`` in
    ``unreachable`` becomes the client's reason: refused connection, timeout, HTTP status…).

    An endpoint may word ``refused``/``unreachable`` for what it was doing; errcodes that mean something to
    the caller (a wrong secret, a used login code) are answered by the caller before it falls back to this.
    """
    if isinstance(exc, WeChatError):
        return ApiError(502, "wechat_error", refused, errcode=exc.errcode, errmsg=exc.errmsg)
    return ApiError(502, "wechat_unreachable", unreachable.format(reason=exc.reason))


# --- JSON input ------------------------------------------------------------------------------------
MAX_JSON_DEPTH = 32  # objects/arrays inside each other; ours go 4 deep, Python's parser overflows near 1000


def _storable(text: str) -> bool:
    """No NUL character (PostgreSQL's text and jsonb refuse it) and no unpaired surrogate (not Unicode: it
    cannot be encoded to UTF-8). JSON's ``\\u0000`` and ``\\ud800`` escapes parse to exactly these."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def too_deep() -> ApiError:
    return ApiError(400, "invalid_json", f"The JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels).")


def check_json(value) -> None:
    """Refuse (400) a parsed JSON body that would fail later, whatever it is sent to: nested deeper than
    MAX_JSON_DEPTH, or with a key or string value that no database stores (see ``_storable``); ``field`` is
    the path to it (``data.keyword1``, ``to[2]``). Iterative: the depth limit is ours, not the stack's."""
    stack = [(value, "", 0)]  # (value, path, objects/arrays around it)
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list) and depth >= MAX_JSON_DEPTH:
            raise too_deep()
        if isinstance(item, str):
            if not _storable(item):
                raise ApiError(
                    400,
                    "validation_error",
                    "Text must not contain NUL characters or unpaired surrogates.",
                    field=path or None,
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _storable(key):  # the bad key itself is never echoed back
                    raise ApiError(
                        400,
                        "validation_error",
                        "Names must not contain NUL characters or unpaired surrogates.",
                        field=path or None,
                    )
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))


def limit_param(request, default: int, maximum: int) -> int:
    """``?limit=``: 1 or more (above ``maximum`` gives ``maximum``); absent or empty: ``default``. Anything else
    is a 400, not quietly the default page (DRF's behaviour)."""
    raw = request.query_params.get("limit", "")
    if raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ApiError(400, "validation_error", "limit must be a whole number from 1.", field="limit")
    return min(int(raw), maximum)


class CursorPagination(pagination.CursorPagination):
    """`?cursor=` pagination answering ``{"results": [...], "next": url|null}`` (the contract's shape)."""

    ordering = "-created_at"
    page_size_query_param = "limit"
    max_page_size = 500

    def get_page_size(self, request):
        return limit_param(request, self.page_size, self.max_page_size)

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "the `next` link's cursor (an unknown cursor answers 404)",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"results per page (default {self.page_size}; at most {self.max_page_size})",
                "schema": {"type": "integer", "minimum": 1},
            },
        ]

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "format": "uri", "nullable": True},
            },
        }


def absolute_url(request, path: str) -> str:
    """An absolute URL for ``path``: PUBLIC_BASE_URL when configured, else the request's own host."""
    if settings.PUBLIC_BASE_URL:
        return settings.PUBLIC_BASE_URL + path
    return request.build_absolute_uri(path)


def iso_utc(value) -> str | None:
    """UTC ISO-8601 with ``Z`` (the contract's time format)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class StrictCharField(serializers.CharField):
    """A string and only a string: DRF's CharField would quietly turn 123 or true into text."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only (not "yes", 1 or "on")."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class RejectUnknownFieldsMixin:
    """A typo'd or read-only field is an error, not silently ignored."""

    def validate(self, attrs):
        unknown = (
            sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        )
        if unknown:
            raise serializers.ValidationError({unknown[0]: ["Unknown or read-only field."]})
        return super().validate(attrs)


class UtcDateTimeField(serializers.DateTimeField):
    def to_representation(self, value):
        return iso_utc(value)


def _is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith(settings.API_PATH_PREFIXES)


def handler404(request, exception=None):
    if _is_api_path(request):
        return error_response(404, "not_found", "Not found.")
    return page_not_found(request, exception)


def handler500(request):
    if _is_api_path(request):
        return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")
    return server_error(request)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "example": "validation_error"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the input at fault, when there is one"},
                "errcode": {"type": "integer", "description": "WeChat's errcode (wechat_* errors)"},
                "errmsg": {"type": "string", "description": "WeChat's errmsg (wechat_* errors)"},
            },
        }
    },
}
_ERROR_STATUSES = {
    "400": "Bad input: invalid_json, validation_error or a more specific code; `field` names the input",
    "401": "not_authenticated: missing, malformed, unknown or revoked credentials",
    "403": "permission_denied: e.g. a read key trying to write",
    "404": "not_found: unknown, or another tenant's (never revealed)",
    "413": "payload_too_large: body over 64 KiB",
    "429": "rate_limited, with Retry-After",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation documents the contract's error shape."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            statuses = ["401", "403", "404", "429"]
            if method in {"post", "put", "patch"}:
                statuses += ["400", "413"]
            elif any(parameter.get("in") == "query" for parameter in operation.get("parameters", ())):
                statuses.append("400")  # a query parameter out of its enum or format
            for parameter in operation.get("parameters", ()):
                if parameter.get("in") == "query" and not parameter.get("required"):
                    # Our views read an empty optional parameter (?status=) as an absent one.
                    parameter["allowEmptyValue"] = True
            responses = operation.setdefault("responses", {})
            for status in statuses:
                responses.setdefault(status, {"description": _ERROR_STATUSES[status], "content": ref})
    return result


def forbid_unknown_request_fields(result, generator, request, public):
    """drf-spectacular postprocessing hook: request bodies are closed objects (``additionalProperties:
    false``), as the API enforces (RejectUnknownFieldsMixin, ``clean_fields``, ``parse_send_request``): a
    typo'd field is a 400, never silently ignored."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object" and "properties" in component:
            component.setdefault("additionalProperties", False)
    return result
