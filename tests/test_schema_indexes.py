"""The schema as migrated: no foreign key keeps a single-column index of its own where another index of the
table already leads with its column (one write per row for nothing, and an index the planner can pick over
the composite one when its statistics lag behind a table's growth: an app's every user read for one
openid), and WeChat's send-result events still find their delivery by MsgID through the partial index."""

from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.db import connection, transaction

from templates_app.models import Delivery

pytestmark = pytest.mark.django_db

PRODUCT_APPS = ("formids", "templates_app", "tenants", "webhooks")


def partial_index_names(model) -> set[str]:
    """Indexes and unique constraints of the model with a condition: they do not cover every row."""
    meta = model._meta
    return {
        item.name
        for item in [*meta.indexes, *meta.constraints]
        if getattr(item, "condition", None) is not None
    }


def redundant_fk_indexes() -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for label in PRODUCT_APPS:
            for model in apps.get_app_config(label).get_models():
                table = model._meta.db_table
                partial = partial_index_names(model)
                constraints = connection.introspection.get_constraints(cursor, table)
                leading = {
                    tuple(info["columns"])
                    for name, info in constraints.items()
                    if (info["index"] or info["unique"]) and name not in partial and len(info["columns"]) > 1
                }
                for name, info in constraints.items():
                    single = info["index"] and not info["unique"] and not info["primary_key"]
                    if single and len(info["columns"]) == 1 and name not in partial:
                        column = info["columns"][0]
                        covering = sorted(cols for cols in leading if cols[0] == column)
                        if covering:
                            found.append(f"{table}.{name} ({column}): led by {covering[0]}")
    return found


def test_no_foreign_key_keeps_an_index_that_another_index_leads_with():
    assert redundant_fk_indexes() == []


def test_the_users_lookup_by_app_and_openid_has_only_the_unique_index_to_use():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "formids_miniuser")
    on_app = sorted(
        name
        for name, info in constraints.items()
        if (info["index"] or info["unique"]) and info["columns"][:1] == ["app_id"]
    )
    assert on_app == ["miniuser_unique_alias", "miniuser_unique_openid"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL plan")
def test_a_lookup_by_msgid_uses_the_partial_index(sandbox_app):
    query = Delivery.objects.filter(msgid=4_000_000_001, push__app=sandbox_app, status=Delivery.Status.SENT)
    with transaction.atomic(), connection.cursor() as cursor:
        # The tables are nearly empty: without this a sequential scan is cheaper, whatever the indexes.
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.explain()
    assert re.search(r"\busing delivery_msgid\b", plan), plan
