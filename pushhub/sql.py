"""Small SQL helpers shared by the apps' services (PostgreSQL fast paths with a portable fallback)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.db import connection
from django.db.models.expressions import RawSQL


def ids_in(ids: Iterable[int]):
    """The right side of ``pk__in=`` for a chunk of ids.

    On PostgreSQL one array parameter: the ORM turns a list of 500 values into 500 parameters, each passed
    through the field's conversion, which was 7% of a broadcast worker's CPU. Elsewhere the list itself."""
    return _array_in([int(pk) for pk in ids], "bigint")


def texts_in(values: Iterable[str]):
    """The same for text columns (``openid__in=`` a page of 500 recipients)."""
    return _array_in([str(value) for value in values], "text")


def _array_in(values: list, db_type: str):
    if connection.vendor == "postgresql":
        return RawSQL(f"SELECT unnest(%s::{db_type}[])", [values])
    return values


def many_ids(ids: Iterable[int]):
    """``ids_in`` for lists of any length (a bulk call's 10,000): one parameter on SQLite too."""
    return _long_array_in([int(pk) for pk in ids], "bigint")


def many_texts(values: Iterable[str]):
    """``texts_in`` for lists of any length (a bulk call's 10,000 openids or aliases)."""
    return _long_array_in([str(value) for value in values], "text")


def _long_array_in(values: list, db_type: str):
    """On SQLite a list would be one ``?`` per value (at most 32,766 in one statement, and each one bound
    separately): ``json_each`` takes the whole list as one JSON text instead."""
    if connection.vendor == "sqlite":
        return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(values)])
    return _array_in(values, db_type)
