"""Small SQL helpers shared by the apps' services (PostgreSQL fast paths with a portable fallback)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import BooleanField, signals
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
        return RawSQL(f"SELECT unnest(%s::{db_type}[])", [pg_array(values, db_type)])
    return values


_INTEGER_TYPES = frozenset({"bigint", "int", "integer", "smallint"})
_TEXT_TYPES = frozenset({"text", "varchar", "uuid"})
_BOOLEAN_TEXT = {True: "t", False: "f", None: "NULL"}


def pg_array(values: Iterable, db_type: str) -> str:
    """``values`` as PostgreSQL's text form of a one-dimensional array (``{1,2,NULL}``,
    ``{"a","b\\"c"}``), to bind as one text parameter that the statement casts (``%s::bigint[]``).

    psycopg's client-side binding (Django's cursors) spells a Python list out element by element in Python:
    340 µs for 500 ids, 580 µs for 500 openids, against 54 and 97 µs this way, and a broadcast chunk binds
    a dozen such lists (8 % of a worker's CPU). ``db_type`` is the array's element type in the statement;
    None is NULL. A text element is always double-quoted with ``\\`` and ``"`` escaped, so any text (a
    comma, a brace, a space, the word NULL) arrives as it was."""
    values = values if isinstance(values, list) else list(values)
    if not values:
        return "{}"
    if db_type in _INTEGER_TYPES:
        if None in values:
            return "{" + ",".join("NULL" if value is None else str(int(value)) for value in values) + "}"
        return "{" + ",".join(map(str, map(int, values))) + "}"
    if db_type in _TEXT_TYPES:
        if None not in values:
            joined = '","'.join(map(str, values))
            if '"' not in joined and "\\" not in joined:
                return '{"' + joined + '"}'
        return (
            "{" + ",".join("NULL" if value is None else _quoted_element(str(value)) for value in values) + "}"
        )
    if db_type == "bool":
        return "{" + ",".join(_BOOLEAN_TEXT[None if value is None else bool(value)] for value in values) + "}"
    raise ValueError(f"pg_array: no text form for {db_type}[]")


def _quoted_element(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def any_of(model, field: str, values: Iterable, db_type: str) -> RawSQL:
    """A ``filter()`` condition "``model.field`` is one of ``values``" for lists of any length (a bulk call's
    10,000), with the whole list as one parameter.

    On PostgreSQL ``= ANY(array)``: an index scan with the array as its condition, whatever the table's
    statistics say. ``IN (SELECT unnest(…))`` (``ids_in``) is a join the planner may turn into a nested loop
    of 10,000 × 10,000 comparisons when the statistics are stale, e.g. right after the rows were written:
    untagging 10,000 users just tagged took 7 s that way, 8 ms this way. On SQLite a list would be one ``?``
    per value (at most 32,766 in a statement); ``json_each`` takes it as one JSON text."""
    quote = connection.ops.quote_name
    column = f"{quote(model._meta.db_table)}.{quote(model._meta.get_field(field).column)}"
    if connection.vendor == "postgresql":
        return RawSQL(
            f"{column} = ANY(%s::{db_type}[])", [pg_array(values, db_type)], output_field=BooleanField()
        )
    return RawSQL(
        f"{column} IN (SELECT value FROM json_each(%s))",
        [json.dumps(list(values))],
        output_field=BooleanField(),
    )


def execute_together(statements: list[tuple[str, list]]) -> None:
    """Run data-changing statements (no results wanted) in one round trip.

    On PostgreSQL one statement: the first ones as data-modifying CTEs (``WITH s0 AS (…) … <last>``), which
    PostgreSQL runs exactly once each whether or not the rest reads them, on one snapshot (so no two of them
    may change the same row). A chunk's push counters and both day rows were three round trips. Elsewhere
    (SQLite) one by one, in order."""
    if not statements:
        return
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql" or len(statements) == 1:
            for sql, params in statements:
                cursor.execute(sql, params)
            return
        *first, (last_sql, last_params) = statements
        ctes = ", ".join(f"s{n} AS ({sql})" for n, (sql, _params) in enumerate(first))
        params = [value for _sql, statement_params in first for value in statement_params]
        cursor.execute(f"WITH {ctes} {last_sql}", [*params, *last_params])


# Large enough that psycopg never prepares a statement by counting its runs (Django's own cursors bind on the
# client and never prepare anyway); not None, which would refuse the explicit prepare below.
_NO_AUTOMATIC_PREPARE = 2**31 - 1


# The longest array a prepared statement is given. After five runs PostgreSQL may keep a prepared statement's
# generic plan, costed for an array parameter of about ten elements whatever it is given: for a 500-row
# chunk's ANY/unnest arrays that plan (nested loops over the unnested rows) made the chunk's row write seven
# times slower and doubled PostgreSQL's CPU per broadcast delivery. Longer arrays go through Django's cursor,
# planned for the array it has; short ones (a one-user push, a few formIds) keep the saved planning.
PREPARED_ARRAY_LIMIT = 8


def prepared_cursor(array_length: int = 0):
    """A cursor whose statements PostgreSQL parses and plans once per connection (server-side binding,
    psycopg's ``prepare=True``), for the few fixed statements every request runs: an SDK upload's planning
    alone was a fifth of PostgreSQL's time for it. Django's own cursors bind on the client and are planned
    every time, which is what a pooler in transaction mode needs (DATABASE_POOL_MODE=transaction: there,
    and on SQLite, this is Django's cursor). Everything else is Django's: the health check, the
    connection, the timezone, the error translation, the queries log. ``with prepared_cursor() as c:``.

    ``array_length``: the longest array the statement binds (its rows, for a batch statement); beyond
    PREPARED_ARRAY_LIMIT this is Django's cursor (see there why)."""
    db = connections[DEFAULT_DB_ALIAS]  # (the ``connection`` proxy looks the thread's up at each use)
    if (
        db.vendor != "postgresql"
        or settings.DATABASE_POOL_MODE != "session"
        or array_length > PREPARED_ARRAY_LIMIT
    ):
        return db.cursor()
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _NO_AUTOMATIC_PREPARE
    cursor_class, timezone_of = _prepared_cursor_class()
    with db.wrap_database_errors:
        cursor = cursor_class(raw)
        if db.timezone != timezone_of(raw):  # as Django's create_cursor: timestamps in the connection's zone
            from django.db.backends.postgresql.base import register_tzloader

            register_tzloader(db.timezone, cursor)
        return db._prepare_cursor(cursor)


@functools.cache
def _prepared_cursor_class():
    """(the cursor class, the time zone a connection's timestamps load in), made once."""
    from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, Format, ServerBindingCursor

    class PreparedCursor(ServerBindingCursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

        def _convert_query(self, query, params=None):
            # Kept as the client-side cursor keeps it: Django's queries log reads the statement from it
            # (here with $1, $2 … where the values go).
            self._query = converted = super()._convert_query(query, params)
            return converted

    def timezone_of(raw):
        return raw.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT).timezone

    return PreparedCursor, timezone_of


class CompiledSelect:
    """A model queryset whose SQL the ORM builds once per database connection, then run with new parameters.

    ``build(*params)`` returns the queryset (``select_related`` and slicing allowed; no annotations,
    ``prefetch_related`` or ``values()``); ``fetch(*params)`` gives its model instances, as iterating it would
    (the related objects of ``select_related`` cached on them, each column through its field's converters).
    The parameters are what the filters bind, in the database's form (a str, an int, a UUID): the first
    build checks that the compiled statement binds exactly them, in that order.

    Compiling a ``select_related`` look-up (its SELECT list, joins and converters) was 60 % of its CPU: 1.4 ms
    of a trigger request's template look-up and of a one-user push's ``load_push``. The statement is run
    through ``prepared_cursor``, so PostgreSQL plans it once per connection too."""

    def __init__(self, build):
        self.build = build

    def fetch(self, *params) -> list:
        db = connections[DEFAULT_DB_ALIAS]
        try:
            compiled = db.pushhub_compiled_selects[self]
        except AttributeError:
            db.pushhub_compiled_selects = {}
            compiled = None
        except KeyError:
            compiled = None
        if compiled is None:
            compiled = db.pushhub_compiled_selects[self] = self._compile(db, params)
        sql, compiler, init_list, start, end, populators, converters = compiled
        with prepared_cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not rows:
            return []
        if converters:
            rows = compiler.apply_converters(rows, converters)
        model = compiler.klass_info["model"]
        found = []
        for row in rows:
            instance = model.from_db(db.alias, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, instance)
            found.append(instance)
        return found

    def _compile(self, db, params):
        from django.db.models.query import ModelIterable, get_related_populators

        queryset = self.build(*params)
        if (
            queryset._iterable_class is not ModelIterable
            or queryset._prefetch_related_lookups
            or queryset._known_related_objects
            or queryset.query.annotation_select
        ):
            raise TypeError("CompiledSelect takes a plain model queryset (select_related and filters only)")
        compiler = queryset.query.get_compiler(connection=db)
        sql, compiled_params = compiler.as_sql()
        if list(compiled_params) != list(params):
            raise TypeError(f"the statement binds {compiled_params!r}, not the parameters given {params!r}")
        select, klass_info = compiler.select, compiler.klass_info
        fields = klass_info["select_fields"]
        start, end = fields[0], fields[-1] + 1
        init_list = [column[0].target.attname for column in select[start:end]]
        populators = get_related_populators(klass_info, select, db.alias)
        converters = compiler.get_converters([column[0] for column in select[0 : compiler.col_count]])
        return sql, compiler, init_list, start, end, populators, converters


def insert_new(instance) -> None:
    """Save a new model instance with one fixed ``INSERT``, as ``instance.save(force_insert=True)`` would: each
    field's ``pre_save`` (``auto_now_add``) and database form, and the instance marked as saved. For models
    whose primary key has a default (a UUID), so nothing needs reading back.

    The ORM's INSERT compiler for a push's twenty-odd columns was a tenth of a trigger request's CPU. When
    something listens to the model's ``pre_save`` or ``post_save``, or the primary key is unset, this is
    ``save()`` itself."""
    model = type(instance)
    meta = model._meta
    db = connections[DEFAULT_DB_ALIAS]
    sql = _insert_statement(model)
    if (
        sql is None
        or instance.pk is None
        or signals.pre_save.has_listeners(model)
        or signals.post_save.has_listeners(model)
    ):
        instance.save(force_insert=True)
        return
    fields = meta.local_concrete_fields
    params = [field.get_db_prep_save(field.pre_save(instance, True), db) for field in fields]
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
    instance._state.adding = False
    instance._state.db = db.alias


@functools.cache
def _insert_statement(model) -> str | None:
    """The model's INSERT of every column, or None where a plain list of values cannot say it: a child of
    another concrete model (two tables), a column the database fills (``db_default``, generated)."""
    meta = model._meta
    if meta.parents or any(field.generated or field.has_db_default() for field in meta.local_concrete_fields):
        return None
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in meta.local_concrete_fields)
    marks = ", ".join(["%s"] * len(meta.local_concrete_fields))
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})"
