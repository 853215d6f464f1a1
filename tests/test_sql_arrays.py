"""pushhub.sql.pg_array: the lists the delivery path binds as one text each arrive in PostgreSQL exactly as
they were (every text, NULLs, booleans, ids), and a statement using it reads and writes the rows asked for."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pushhub.sql import any_of, ids_in, pg_array, texts_in

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's array literals"),
]

# PostgreSQL's text cannot hold NUL; every other character can.
any_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


def round_trip(values, db_type):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{db_type}[]", [pg_array(values, db_type)])
        return cursor.fetchone()[0]


@hypothesis_settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.one_of(st.none(), any_text), max_size=20))
def test_any_texts_and_nulls_arrive_as_they_were(values):
    assert round_trip(values, "text") == values


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["NULL", "null", None],
        ['say "hi"', "back\\slash", "\\", '"', "a,b", "{x}", " padded ", "multi\nline", "中文"],
        ["oABC-123_xyz"] * 3,
    ],
)
def test_awkward_texts(values):
    assert round_trip(values, "text") == values


def test_integers_booleans_and_uuids():
    assert round_trip([1, 2**40, -3, None, 0], "bigint") == [1, 2**40, -3, None, 0]
    assert round_trip([0, 7], "int") == [0, 7]
    assert round_trip([], "bigint") == []
    assert round_trip([True, False, None], "bool") == [True, False, None]
    ids = [uuid.uuid4(), uuid.uuid4()]
    assert round_trip(ids, "uuid") == ids
    assert round_trip([str(ids[0])], "uuid") == [ids[0]]


def test_an_integer_list_refuses_anything_but_integers():
    # An id list is never spliced text: an element that is not a number fails in Python, before any SQL.
    with pytest.raises(ValueError):
        pg_array(["1,2"], "bigint")
    with pytest.raises(ValueError):
        pg_array([1], "jsonb")


def test_filters_built_on_it_find_exactly_the_rows_asked_for(sandbox_app):
    from formids.models import MiniUser

    app = sandbox_app
    users = [MiniUser.objects.create(app=app, openid=f"o-array-{n}") for n in range(4)]
    odd = MiniUser.objects.create(app=app, openid='o"quoted\\user')
    wanted = [users[0], users[2], odd]
    by_id = MiniUser.objects.filter(pk__in=ids_in([u.pk for u in wanted]))
    by_openid = MiniUser.objects.filter(app=app, openid__in=texts_in([u.openid for u in wanted]))
    by_any = MiniUser.objects.filter(any_of(MiniUser, "openid", [u.openid for u in wanted], "text"), app=app)
    expected = {u.pk for u in wanted}
    assert set(by_id.values_list("pk", flat=True)) == expected
    assert set(by_openid.values_list("pk", flat=True)) == expected
    assert set(by_any.values_list("pk", flat=True)) == expected
