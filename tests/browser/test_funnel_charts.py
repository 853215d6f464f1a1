"""The funnel card in a real browser: the quota page draws the funnel chart from funnel.json and the range
select (7/30/90 days) reloads it; a template's page draws its open rate. Same skips as test_flow.py."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("playwright")
if not (Path("/usr/bin/chromium").exists() and shutil.which("/usr/bin/chromium")):
    pytest.skip("no Chromium at /usr/bin/chromium", allow_module_level=True)

from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

from formids import funnel  # noqa: E402
from templates_app import catalogue  # noqa: E402

ORDER = "TPL-FUNNEL-ORDER"


def sign_in(page, live_server) -> None:
    """The owner's session (tests/conftest.py's tenant) handed to the browser as its cookie."""
    client = Client()
    assert client.login(username="owner@acme.test", password="correct horse battery")
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )


def chart_drawn(page, canvas: str) -> bool:
    """Chart.js keeps its charts by canvas: a chart exists and has data."""
    return page.evaluate(
        "(id) => { const c = Chart.getChart(document.getElementById(id)); return !!c && c.data.datasets[0].data.length > 0; }",
        canvas,
    )


@pytest.mark.django_db(transaction=True)
def test_the_funnel_charts_draw_and_follow_the_range(page, live_server, tenant, sandbox_app):
    template = catalogue.create_template(
        sandbox_app,
        kind="subscribe",
        template_id=ORDER,
        title="Order shipped",
        fields=[{"key": "thing1", "name": "item"}],
        actor="test",
    )
    today = timezone.now().date()
    funnel.bump_template_stat(sandbox_app.pk, ORDER, today, credits_collected=9, sent=8, failed=1, opened=4)
    funnel.bump_template_stat(sandbox_app.pk, ORDER, today - timedelta(days=60), sent=100)
    sign_in(page, live_server)

    page.goto(f"/dashboard/apps/{sandbox_app.appid}/quota/")
    expect(page.locator("#f-sent")).to_have_text("8")
    page.wait_for_function("() => document.getElementById('funnel').dataset.loaded === '30'")
    assert chart_drawn(page, "chart-funnel")
    page.locator("#funnel-range").select_option("90")
    expect(page.locator("#f-sent")).to_have_text("108")
    page.locator("#funnel-range").select_option("7")
    expect(page.locator("#f-sent")).to_have_text("8")

    page.goto(f"/dashboard/templates/{template.pk}/")
    page.wait_for_function("() => document.getElementById('funnel').dataset.loaded === '30'")
    assert chart_drawn(page, "chart-funnel")
    assert chart_drawn(page, "chart-open-rate")
    assert (
        page.evaluate(
            "Chart.getChart(document.getElementById('chart-open-rate')).data.datasets[0].data.at(-1)"
        )
        == 50
    )
