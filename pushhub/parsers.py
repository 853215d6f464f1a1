"""The JSON parser of /api and /sdk (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from __future__ import annotations

from rest_framework import parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, and then ``pushhub.api.check_json``: a body that is nested too deeply or holds
    text no database stores answers 400 here instead of a 500 further in (a RecursionError, or PostgreSQL's
    refusal of NUL characters and unpaired surrogates)."""

    def parse(self, stream, media_type=None, parser_context=None):
        # Not at the top: pushhub.api imports DRF's views, which import the parser classes from the settings.
        from pushhub.api import check_json, too_deep

        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise too_deep() from None
        check_json(data)
        return data
