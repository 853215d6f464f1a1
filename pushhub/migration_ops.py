"""Index changes that take no long lock on a big table: on PostgreSQL ``CREATE``/``DROP INDEX CONCURRENTLY``
(writes go on while the index is built or dropped), elsewhere the plain statement. A migration using these
sets ``atomic = False``: PostgreSQL runs CONCURRENTLY only outside a transaction. Both directions use
``IF [NOT] EXISTS``, so a migration interrupted halfway can be run again."""

from __future__ import annotations

from django.db import migrations


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def _create(schema_editor, name: str, table: str, column: str, where: str) -> None:
    condition = f" WHERE {where}" if where else ""
    schema_editor.execute(
        f'CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS "{name}" ON "{table}" ("{column}"){condition}'
    )


def _drop(schema_editor, name: str) -> None:
    schema_editor.execute(f'DROP INDEX {_concurrently(schema_editor)}IF EXISTS "{name}"')


def drop_index(name: str, table: str, column: str, *, remake: bool = True) -> migrations.RunPython:
    """Drop the single-column index ``name`` on ``table.column`` (backwards: make it again, unless ``remake`` is
    False: for an index nothing used, such as the LIKE twin PostgreSQL's backend gives a text foreign key)."""
    return migrations.RunPython(
        lambda apps, schema_editor: _drop(schema_editor, name),
        (lambda apps, schema_editor: _create(schema_editor, name, table, column, ""))
        if remake
        else migrations.RunPython.noop,
    )


def create_index(name: str, table: str, column: str, where: str = "") -> migrations.RunPython:
    """Make the single-column index ``name`` on ``table.column``, partial when ``where`` is given (backwards:
    drop it)."""
    return migrations.RunPython(
        lambda apps, schema_editor: _create(schema_editor, name, table, column, where),
        lambda apps, schema_editor: _drop(schema_editor, name),
    )
