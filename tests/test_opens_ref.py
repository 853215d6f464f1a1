"""The ph=<ref> codec (templates_app.opens_ref) and the funnel's counters (formids.funnel): the seam issue
18's opens, inbox and statistics are built on."""

from datetime import date

import pytest

from formids import funnel
from formids.models import TemplateDailyStat
from templates_app.opens_ref import MAX_REF, make_ref, page_with_ref, parse_ref


@pytest.mark.parametrize("delivery_id", [1, 35, 36, 123_456_789, 36**10 - 1])
def test_a_ref_names_its_delivery_and_fits_the_contract(delivery_id):
    ref = make_ref(delivery_id)
    assert len(ref) <= MAX_REF
    assert ref.isalnum() and ref == ref.lower()
    assert parse_ref(ref) == delivery_id


@pytest.mark.parametrize("bad", [None, "", "abc", 42, "ABCDEF1", "zzzzzz1", "x" * 17, "abcdef-1", "短"])
def test_malformed_or_forged_refs_name_nothing(bad):
    assert parse_ref(bad) is None


def test_a_ref_with_a_changed_id_is_refused():
    ref = make_ref(1000)
    other = make_ref(1001)
    assert parse_ref(ref[:6] + other[6:]) is None


def test_the_page_keeps_its_own_query_and_its_length_limit():
    assert page_with_ref("pages/order?id=1", "abc1234", 1024) == "pages/order?id=1&ph=abc1234"
    assert page_with_ref("pages/order", "abc1234", 1024) == "pages/order?ph=abc1234"
    assert page_with_ref("", "abc1234", 1024) == ""
    long_page = "pages/x?q=" + "a" * 1010
    assert page_with_ref(long_page, "abc1234", 1024) == long_page


@pytest.mark.django_db
def test_funnel_counters_add_up_per_template_and_day(sandbox_app):
    day = date(2026, 12, 1)
    funnel.bump_template_stat(sandbox_app.id, "TID", day, credits_collected=3, sent=2)
    funnel.bump_template_stat(sandbox_app.id, "TID", day, sent=1, failed=1)
    funnel.bump_template_stat(sandbox_app.id, "", day, credits_collected=5)
    row = TemplateDailyStat.objects.get(app=sandbox_app, template_id="TID", day=day)
    assert (row.credits_collected, row.sent, row.failed) == (3, 3, 1)
    assert TemplateDailyStat.objects.get(app=sandbox_app, template_id="", day=day).credits_collected == 5
    with pytest.raises(ValueError):
        funnel.bump_template_stat(sandbox_app.id, "TID", day, bogus=1)
