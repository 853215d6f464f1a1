"""GET /api/v1/apps/{appid}/stats (../shared/API.md "Statistics"): the funnel per UTC day, zero-filled, for the
app or one template; bad ranges are 400s naming the parameter, unknown templates and other tenants' apps 404."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from formids import funnel
from formids.models import Credit
from templates_app import catalogue
from templates_app.models import Delivery
from tenants import services as tenant_services
from tests.conftest import random_appid, random_secret

pytestmark = pytest.mark.django_db

ORDER, ARRIVAL, FORMID_TPL = "TPL-ORDER", "TPL-ARRIVAL", "TPL-FORMID"
ZERO = dict.fromkeys(funnel.COUNTERS, 0)


def _template(app, template_id: str, kind: str = "subscribe"):
    return catalogue.create_template(
        app,
        kind=kind,
        template_id=template_id,
        title=template_id,
        fields=[{"key": "thing1" if kind == "subscribe" else "keyword1", "name": "item"}],
        actor="test",
    )


@pytest.fixture
def shop(sandbox_app):
    """Two subscribe templates and a formId template with a few days of counters."""
    _template(sandbox_app, ORDER)
    _template(sandbox_app, ARRIVAL)
    _template(sandbox_app, FORMID_TPL, kind="formid")
    app = sandbox_app.pk
    funnel.bump_template_stat(app, ORDER, date(2026, 11, 1), credits_collected=10, sent=8, failed=1, opened=4)
    funnel.bump_template_stat(app, ORDER, date(2026, 11, 3), sent=2, opened=1, resubscribed=1)
    funnel.bump_template_stat(app, ARRIVAL, date(2026, 11, 1), credits_collected=5, sent=3)
    funnel.bump_template_stat(app, FORMID_TPL, date(2026, 11, 3), sent=6, failed=2, opened=2)
    funnel.bump_template_stat(app, "", date(2026, 11, 3), credits_collected=20)
    funnel.bump_template_stat(app, ORDER, date(2026, 10, 31), sent=100)  # outside the ranges asked below
    return sandbox_app


def url(app, **params) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"/api/v1/apps/{app.appid}/stats" + (f"?{query}" if query else "")


def assert_error(response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert error.get("field") == field


def test_the_app_s_days_sum_its_templates_and_its_formids(read_api, shop):
    response = read_api.get(url(shop, **{"from": "2026-11-01", "to": "2026-11-03"}))
    assert response.status_code == 200
    assert response.json() == {
        "days": [
            {
                "date": "2026-11-01",
                "credits_collected": 15,
                "sent": 11,
                "failed": 1,
                "opened": 4,
                "resubscribed": 0,
            },
            {"date": "2026-11-02", **ZERO},
            {
                "date": "2026-11-03",
                "credits_collected": 20,
                "sent": 8,
                "failed": 2,
                "opened": 3,
                "resubscribed": 1,
            },
        ]
    }


def test_one_subscribe_template_by_wechat_id_or_by_catalogue_id(read_api, shop):
    expected = [
        {
            "date": "2026-11-01",
            "credits_collected": 10,
            "sent": 8,
            "failed": 1,
            "opened": 4,
            "resubscribed": 0,
        },
        {"date": "2026-11-02", **ZERO},
        {
            "date": "2026-11-03",
            "credits_collected": 0,
            "sent": 2,
            "failed": 0,
            "opened": 1,
            "resubscribed": 1,
        },
    ]
    by_wechat_id = read_api.get(url(shop, **{"from": "2026-11-01", "to": "2026-11-03", "template": ORDER}))
    assert by_wechat_id.json()["days"] == expected
    pk = shop.templates.get(template_id=ORDER).pk
    by_id = read_api.get(url(shop, **{"from": "2026-11-01", "to": "2026-11-03", "template": pk}))
    assert by_id.json()["days"] == expected


def test_a_formid_template_s_credits_are_the_app_s_formids(read_api, shop):
    response = read_api.get(url(shop, **{"from": "2026-11-03", "to": "2026-11-03", "template": FORMID_TPL}))
    assert response.json()["days"] == [
        {
            "date": "2026-11-03",
            "credits_collected": 20,
            "sent": 6,
            "failed": 2,
            "opened": 2,
            "resubscribed": 0,
        }
    ]


def test_the_default_range_is_the_last_30_days_to_today(read_api, shop):
    today = timezone.now().date()
    funnel.bump_template_stat(shop.pk, ORDER, today, sent=7)
    days = read_api.get(url(shop)).json()["days"]
    assert len(days) == 30
    assert days[0]["date"] == (today - timedelta(days=29)).isoformat()
    assert days[-1] == {"date": today.isoformat(), **ZERO, "sent": 7}

    days = read_api.get(url(shop, to="2026-11-03")).json()["days"]
    assert (len(days), days[0]["date"], days[-1]["date"]) == (30, "2026-10-05", "2026-11-03")
    assert days[-4]["sent"] == 100  # 2026-10-31
    days = read_api.get(url(shop, **{"from": "2026-11-03", "to": "2026-11-03"})).json()["days"]
    assert [d["date"] for d in days] == ["2026-11-03"]


def test_366_days_are_allowed_and_367_are_not(read_api, shop):
    response = read_api.get(url(shop, **{"from": "2025-11-03", "to": "2026-11-03"}))
    assert response.status_code == 200 and len(response.json()["days"]) == 366
    assert_error(
        read_api.get(url(shop, **{"from": "2025-11-02", "to": "2026-11-03"})), 400, "validation_error", "from"
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-11-31"}, "from"),
        ({"from": "2026-1-3"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"to": "2026-11-03T00:00:00Z"}, "to"),
        ({"from": "2026-11-04", "to": "2026-11-03"}, "from"),
        ({"from": "20261103"}, "from"),
        ({"to": "２０２６-11-03"}, "to"),
    ],
)
def test_bad_dates_and_reversed_ranges_are_a_400_naming_the_parameter(read_api, shop, params, field):
    assert_error(read_api.get(url(shop, **params)), 400, "validation_error", field)


def test_an_unknown_template_is_a_404(read_api, shop):
    assert_error(read_api.get(url(shop, template="TPL-NOPE")), 404, "not_found")
    assert_error(read_api.get(url(shop, template="6f9619ff-8b86-d011-b42d-00c04fc964ff")), 404, "not_found")


def test_a_deleted_template_is_unknown(read_api, shop):
    template = shop.templates.get(template_id=ARRIVAL)
    catalogue.delete_template(template, actor="test")
    assert_error(read_api.get(url(shop, template=ARRIVAL)), 404, "not_found")


def test_another_app_s_template_is_a_404_even_in_the_same_tenant(read_api, shop, tenant):
    other = tenant_services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True, actor="test"
    )
    elsewhere = _template(other, "TPL-ELSEWHERE")
    assert_error(read_api.get(url(shop, template="TPL-ELSEWHERE")), 404, "not_found")
    assert_error(read_api.get(url(shop, template=str(elsewhere.pk))), 404, "not_found")


def test_another_tenant_s_app_is_a_404_and_no_key_a_401(outsider_api, shop, client):
    assert_error(outsider_api.get(url(shop)), 404, "not_found")
    assert_error(outsider_api.get(url(shop, template=ORDER)), 404, "not_found")
    assert client.get(url(shop)).status_code == 401


def test_a_year_is_one_query_after_the_app(read_api, shop, django_assert_max_num_queries):
    # The key, the app, the template, the one GROUP BY day; nothing that grows with the range or the rows.
    with django_assert_max_num_queries(5) as queries:
        response = read_api.get(url(shop, **{"from": "2025-11-04", "to": "2026-11-03", "template": ORDER}))
    assert response.status_code == 200
    read = " ".join(query["sql"] for query in queries.captured_queries)
    assert Delivery._meta.db_table not in read and Credit._meta.db_table not in read


def test_the_schema_describes_the_endpoint(read_api):
    schema = read_api.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/apps/{appid}/stats"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"from", "to", "template"}
    assert {"200", "400", "404"} <= set(operation["responses"])
