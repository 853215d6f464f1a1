"""The JSON parser of /api and /sdk (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from __future__ import annotations

import codecs
import io

from django.conf import settings
from rest_framework import parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, and then ``pushhub.api.check_json``: a body that is nested too deeply or holds
    text no database stores answers 400 here instead of a 500 further in (a RecursionError, or PostgreSQL's
    refusal of NUL characters and unpaired surrogates)."""

    def parse(self, stream, media_type=None, parser_context=None):
        # Not at the top: pushhub.api imports DRF's views, which import the parser classes from the settings.
        from pushhub.api import MAX_JSON_DEPTH, check_json, too_deep

        body = stream.read()
        try:
            data = super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            raise too_deep() from None
        if _may_hold_what_check_json_refuses(body, parser_context, MAX_JSON_DEPTH):
            check_json(data)
        return data


def _may_hold_what_check_json_refuses(body: bytes, parser_context, max_depth: int) -> bool:
    """False only when ``body`` (UTF-8) cannot parse to what ``check_json`` refuses, so the walk of every
    value (a tenth of an SDK upload's CPU) is skipped: a NUL or an unpaired surrogate can only come from a
    ``\\u`` escape (strict JSON refuses raw control characters, and UTF-8 cannot carry a surrogate), and
    nesting ``max_depth`` deep needs as many brackets."""
    # The charset DRF's parse just decoded with (its own get_encoding is not in every DRF the pins allow).
    encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
    try:
        if codecs.lookup(encoding).name != "utf-8":
            return True
    except LookupError:
        return True
    return b"\\u" in body or body.count(b"[") + body.count(b"{") >= max_depth
