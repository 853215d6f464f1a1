"""The funnel as the stats endpoint and the dashboard read it: an app's days, or one template's.

The numbers are formids.funnel's aggregate rows (``daily_funnel``); this module only knows the catalogue:
which template ``?template=`` names, and that a formId template's credits are the app's formIds.
"""

from __future__ import annotations

import uuid
from datetime import date

from formids import funnel
from templates_app.models import Template
from tenants.models import MiniProgram


def find_template(app: MiniProgram, ref: str) -> Template | None:
    """The app's (not deleted) template named by ``ref``: the catalogue's ``id`` (a UUID) or WeChat's
    ``template_id``. None for anything else, another app's template included."""
    templates = Template.objects.visible().filter(app=app)
    try:
        return templates.filter(pk=uuid.UUID(ref)).first()
    except ValueError:
        pass
    # WeChat's id is unique per kind: a subscribe template before a formId one of the same id (never seen).
    return templates.filter(template_id=ref).order_by("-kind").first()


def app_days(app: MiniProgram, start: date, end: date) -> list[dict]:
    """Every day of the range, summed over the app's templates and its formIds."""
    return funnel.daily_funnel(app.pk, start, end)


def template_days(template: Template, start: date, end: date) -> list[dict]:
    """Every day of the range for one template; a formId template's credits are the app's formIds."""
    return funnel.daily_funnel(
        template.app_id,
        start,
        end,
        template_id=template.template_id,
        formid_template=template.kind == Template.Kind.FORMID,
    )


def template_chart(template: Template, days: int) -> dict:
    """The dashboard's funnel and open rate of one template over the last ``days`` days."""
    return funnel.chart_data(
        template.app_id,
        days,
        template_id=template.template_id,
        formid_template=template.kind == Template.Kind.FORMID,
    )
