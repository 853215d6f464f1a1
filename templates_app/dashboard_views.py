"""Dashboard pages for the template catalogue (list, sync, add by hand, one template with its trigger URL,
a curl example and a test send) and the sandbox phone (test users, form submits, subscription accepts,
the inbox).

Apps come through ``get_app_for`` and templates through ``get_template_for`` (another tenant's is a 404;
a viewer may look but every POST is 403). Changes go through ``templates_app.catalogue``, sends through
``templates_app.pushes.endpoint.send`` (the trigger URL's own path), and the phone stores credits through the
SDK's services (``formids.services.take_ids`` / ``report_subscriptions``).
"""

from __future__ import annotations

import json
import shlex
import uuid

from django.contrib import messages
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from formids import funnel
from formids import services as credits
from formids.dashboard_views import error_message
from formids.models import MiniUser, UserTag
from pushhub.api import ApiError, absolute_url
from pushhub.wechat import rules
from pushhub.wechat.sandbox import services as sandbox
from pushhub.wechat.sandbox.errors import SandboxError
from templates_app import catalogue, stats
from templates_app.models import Template
from templates_app.pushes import endpoint
from templates_app.pushes.addressing import TAG_PREFIX, form_to
from tenants.auth import actor_for
from tenants.dashboard_scope import get_app_for, require_write, tenant_required
from tenants.models import MiniProgram

# Values that pass WeChat's rules for each subscribe key type (pushhub.wechat.rules).
SAMPLE_VALUES = {
    "thing": "示例",
    "time": "15:01",
    "character_string": "A123",
    "number": "1",
    "amount": "¥1.00",
    "date": "2026年11月24日",
    "phrase": "已发货",
    "phone_number": "13800138000",
    "name": "张三",
    "car_number": "粤A12345",
    "letter": "A",
    "symbol": "%",
}
DEFAULT_SAMPLE = "示例"
INBOX_SIZE = 50


def sample_value(template: Template, key: str) -> str:
    if template.kind == Template.Kind.FORMID:
        return DEFAULT_SAMPLE
    return SAMPLE_VALUES.get(rules.key_type(key), DEFAULT_SAMPLE)


def get_template_for(request: HttpRequest, template_pk: uuid.UUID, *, write: bool = False) -> Template:
    """The current tenant's (not deleted) template; 404 for anyone else's (a malformed id matches no URL)."""
    template = (
        Template.objects.for_tenant(request.tenant)
        .visible()
        .select_related("app")
        .filter(pk=template_pk)
        .first()
    )
    if template is None:
        raise Http404
    if write:
        require_write(request)
    return template


def parse_field_lines(text: str) -> list[dict[str, str]]:
    """``key:name`` per line (``：`` works too; the name is optional) → the catalogue's fields list."""
    fields = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, _sep, name = line.replace("：", ":").partition(":")
        fields.append({"key": key.strip(), "name": name.strip()})
    return fields


# --- catalogue ---------------------------------------------------------------------------------------
def _catalogue_page(request: HttpRequest, app: MiniProgram, values: dict, errors: dict, status: int = 200):
    templates = (
        Template.objects.for_tenant(request.tenant).visible().filter(app=app).order_by("kind", "title")
    )
    return render(
        request,
        "templates_app/templates_list.html",
        {
            "app": app,
            "templates": templates,
            "values": values,
            "errors": errors,
            "kinds": Template.Kind.choices,
            "can_write": request.membership.can_write,
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@tenant_required
def template_list(request: HttpRequest, appid: str) -> HttpResponse:
    """The catalogue, and the add-by-hand form (POST)."""
    app = get_app_for(request, appid, write=request.method == "POST")
    values = {
        "kind": Template.Kind.SUBSCRIBE,
        "subscription": Template.Subscription.ONE_TIME,
        "template_id": "",
        "title": "",
        "fields": "",
        "page": "",
    }
    if request.method == "GET":
        return _catalogue_page(request, app, {**values, "track_opens": True}, {})
    values = {name: request.POST.get(name, "").strip() for name in values}
    values["track_opens"] = request.POST.get("track_opens") == "1"  # an unticked box is not posted
    try:
        template = catalogue.create_template(
            app,
            kind=values["kind"],
            template_id=values["template_id"],
            title=values["title"],
            fields=parse_field_lines(values["fields"]),
            page=values["page"],
            # The form always shows the choice; it means something for subscribe templates only.
            subscription=values["subscription"] if values["kind"] == Template.Kind.SUBSCRIBE else None,
            track_opens=values["track_opens"],
            actor=actor_for(request),
        )
    except ApiError as exc:
        field = (exc.field or "form").split("[")[0].split(".")[0]
        return _catalogue_page(request, app, values, {field: error_message(exc)}, status=400)
    messages.success(request, _("Template added."))
    return redirect("template-detail", template_pk=template.pk)


@require_POST
@tenant_required
def template_sync(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid, write=True)
    try:
        counts = catalogue.sync_templates(app, actor=actor_for(request))
    except ApiError as exc:
        messages.error(request, error_message(exc))
    else:
        messages.success(
            request,
            _("Synced from WeChat: %(created)d new, %(updated)d changed, %(deleted)d removed.") % counts,
        )
    return redirect("templates", appid=app.appid)


# --- one template ------------------------------------------------------------------------------------
def _example_body(template: Template, openid: str) -> dict:
    return {"to": openid, "data": {key: sample_value(template, key) for key in template.keys}}


def curl_example(url: str, body: dict) -> str:
    payload = json.dumps(body, ensure_ascii=False)
    return (
        f"curl -X POST {shlex.quote(url)} \\\n"
        f"     -H 'Content-Type: application/json' \\\n"
        f"     -d {shlex.quote(payload)}"
    )


def _detail_page(request: HttpRequest, template: Template, *, form=None, error: str = "", status: int = 200):
    """``form``: what the test send form showed ({"to": text, "data": {key: value}})."""
    app = template.app
    users = list(credits_users(app))
    example_openid = users[0] if users else "OPENID"
    body = _example_body(template, example_openid)
    url = catalogue.trigger_url(request, template)
    form = form or {"to": example_openid, "data": body["data"]}
    return render(
        request,
        "templates_app/template_detail.html",
        {
            "app": app,
            "template": template,
            "trigger_url": url,
            "curl": curl_example(url, body),
            "curl_body": body,
            "users": users,
            "tags": [{"value": TAG_PREFIX + tag, "tag": tag} for tag in app_tags(app)],
            "field_rows": [
                {"key": f["key"], "name": f["name"], "value": form["data"].get(f["key"], "")}
                for f in template.fields
            ],
            "to": form["to"],
            "send_error": error,
            "can_write": request.membership.can_write,
            "retired": not app.sandbox and template.kind == Template.Kind.FORMID,
            "funnel": stats.template_chart(template, funnel.DEFAULT_RANGE_DAYS),
            "funnel_ranges": funnel.CHART_RANGES,
        },
        status=status,
    )


def app_tags(app: MiniProgram, limit: int = 50) -> list[str]:
    """The app's first ``limit`` tags by name, to offer ``@tag:`` in the test send. A skip scan of UserTag's
    (app, tag, user) index, one probe per tag: a DISTINCT would read every tag row of the app."""
    table = UserTag._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE tags(tag, n) AS (
                SELECT MIN(tag), 1 FROM {table} WHERE app_id = %s
                UNION ALL
                SELECT (SELECT MIN(t.tag) FROM {table} t WHERE t.app_id = %s AND t.tag > tags.tag), n + 1
                FROM tags WHERE tags.tag IS NOT NULL AND n < %s
            )
            SELECT tag FROM tags WHERE tag IS NOT NULL ORDER BY n
            """,
            [app.pk, app.pk, limit],
        )
        return [tag for (tag,) in cursor.fetchall()]


def credits_users(app: MiniProgram, limit: int = 100) -> list[str]:
    """Openids to pick from for a test send: the app's users, most recently seen first."""
    return list(
        MiniUser.objects.filter(app=app).order_by("-last_seen").values_list("openid", flat=True)[:limit]
    )


@require_GET
@tenant_required
def template_detail(request: HttpRequest, template_pk: uuid.UUID) -> HttpResponse:
    return _detail_page(request, get_template_for(request, template_pk))


@require_GET
@never_cache
@tenant_required
def template_funnel(request: HttpRequest, template_pk: uuid.UUID) -> JsonResponse:
    """The template's funnel and open rate over the last 7, 30 or 90 days (``?days=``)."""
    template = get_template_for(request, template_pk)
    return JsonResponse(stats.template_chart(template, funnel.chart_range(request.GET.get("days"))))


@require_POST
@tenant_required
def template_rotate(request: HttpRequest, template_pk: uuid.UUID) -> HttpResponse:
    template = get_template_for(request, template_pk, write=True)
    catalogue.rotate_trigger_url(template, actor=actor_for(request))
    messages.success(request, _("New trigger URL: the old one no longer works."))
    return redirect("template-detail", template_pk=template.pk)


@require_POST
@tenant_required
def template_status(request: HttpRequest, template_pk: uuid.UUID) -> HttpResponse:
    """Enable or disable the template (``status=active|disabled``)."""
    template = get_template_for(request, template_pk, write=True)
    try:
        catalogue.update_template(template, actor=actor_for(request), status=request.POST.get("status", ""))
    except ApiError as exc:
        messages.error(request, error_message(exc))
    return redirect("template-detail", template_pk=template.pk)


@require_POST
@tenant_required
def template_track_opens(request: HttpRequest, template_pk: uuid.UUID) -> HttpResponse:
    """Turn open tracking on or off (``track_opens=1|0``): later sends' pages carry ``ph=<ref>`` or not."""
    template = get_template_for(request, template_pk, write=True)
    track = request.POST.get("track_opens")
    if track not in ("0", "1"):
        messages.error(request, _("Choose whether to track opens."))
    else:
        catalogue.update_template(template, actor=actor_for(request), track_opens=track == "1")
    return redirect("template-detail", template_pk=template.pk)


@require_POST
@tenant_required
def template_delete(request: HttpRequest, template_pk: uuid.UUID) -> HttpResponse:
    template = get_template_for(request, template_pk, write=True)
    catalogue.delete_template(template, actor=actor_for(request))
    messages.success(request, _("Template deleted."))
    return redirect("templates", appid=template.app.appid)


def _test_body(request: HttpRequest, template: Template) -> dict:
    """The test send as a send body: ``to`` read as a form-encoded trigger reads it (openids, ``@all``,
    ``@tag:vip``)."""
    return {
        "to": form_to(request.POST.getlist("to")),
        "data": {key: request.POST.get(f"data.{key}", "") for key in template.keys},
    }


@require_POST
@tenant_required
@never_cache
def template_test_send(request: HttpRequest, template_pk: uuid.UUID) -> HttpResponse:
    """A test send through the trigger URL's own path; ``dry_run=1`` answers the reach as JSON (fetch)."""
    template = get_template_for(request, template_pk, write=True)
    body = _test_body(request, template)
    form = {"to": request.POST.get("to", "").strip(), "data": body["data"]}
    dry_run = request.POST.get("dry_run") == "1"
    try:
        status, answer = endpoint.send(
            template,
            body,
            dry_run=dry_run,
            idempotency_key="",
            created_by=actor_for(request),
            status_url=lambda push: absolute_url(request, reverse("api-push-detail", args=[push.pk])),
        )
    except ApiError as exc:
        if dry_run:
            return JsonResponse(exc.payload(), status=exc.status_code)
        return _detail_page(request, template, form=form, error=error_message(exc), status=exc.status_code)
    if dry_run:
        return JsonResponse(answer, status=status)
    return redirect("push-page", push_id=answer["push_id"])


# --- sandbox phone -----------------------------------------------------------------------------------
def _sandbox_app_for(request: HttpRequest, appid: str, *, write: bool = False) -> MiniProgram:
    app = get_app_for(request, appid, write=write)
    if not app.sandbox:
        raise Http404
    return app


def _catalogue_fields(app: MiniProgram) -> dict[str, dict]:
    """{WeChat template id: {title, names: {key: name}}} of the app's catalogue, in one query."""
    return {
        t.template_id: {"title": t.title, "names": {f["key"]: f["name"] for f in t.fields}}
        for t in Template.objects.filter(app=app).exclude(status=Template.Status.DELETED)
    }


def inbox_cards(app: MiniProgram, openid: str) -> list[dict]:
    """The user's sandbox inbox, newest first, as service-notification cards with the catalogue's names."""
    if not openid:
        return []
    known = _catalogue_fields(app)
    cards = []
    for message in reversed(sandbox.inbox(app.appid, openid, limit=INBOX_SIZE)):
        payload = sandbox.message_payload(message)
        entry = known.get(message.template_id, {"title": "", "names": {}})
        data = payload["data"] if isinstance(payload["data"], dict) else {}
        fields = []
        for key, value in data.items():
            text = value.get("value", "") if isinstance(value, dict) else value
            fields.append({"key": key, "name": entry["names"].get(key) or key, "value": str(text)})
        cards.append(
            {
                "id": payload["id"],
                "title": entry["title"] or payload["title"] or payload["template_id"],
                "kind": payload["kind"],
                "fields": fields,
                "page": payload["page"],
                "time": timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
    return cards


@require_GET
@tenant_required
def phone(request: HttpRequest, appid: str) -> HttpResponse:
    app = _sandbox_app_for(request, appid)
    users = [u.openid for u in sandbox.list_users(app.appid)]
    openid = request.GET.get("openid", "")
    if openid not in users:
        openid = users[0] if users else ""
    subscribe_templates = (
        Template.objects.for_tenant(request.tenant)
        .filter(app=app, kind=Template.Kind.SUBSCRIBE, status=Template.Status.ACTIVE)
        .order_by("title")
    )
    return render(
        request,
        "templates_app/phone.html",
        {
            "app": app,
            "users": users,
            "openid": openid,
            "subscribe_templates": subscribe_templates,
            "cards": inbox_cards(app, openid),
            "can_write": request.membership.can_write,
        },
    )


def _back_to_phone(app: MiniProgram, openid: str) -> HttpResponse:
    url = reverse("sandbox-phone", args=[app.appid])
    return redirect(f"{url}?openid={openid}" if openid else url)


@require_POST
@tenant_required
def phone_new_user(request: HttpRequest, appid: str) -> HttpResponse:
    app = _sandbox_app_for(request, appid, write=True)
    user = sandbox.create_user(app.appid)
    messages.success(request, _("Test user %(openid)s created.") % {"openid": user.openid})
    return _back_to_phone(app, user.openid)


def _phone_user(app: MiniProgram, openid: str):
    """The sandbox user (404 if unknown) and PushHub's MiniUser for it, as the SDK's login makes it."""
    try:
        sandbox.get_user(app.appid, openid)
    except SandboxError:
        raise Http404 from None
    return credits.touch_user(app, openid)


@require_POST
@tenant_required
def phone_submit_form(request: HttpRequest, appid: str) -> HttpResponse:
    """A ``<form report-submit>`` tap: WeChat hands out a formId and the SDK uploads it."""
    app = _sandbox_app_for(request, appid, write=True)
    openid = request.POST.get("openid", "")
    user = _phone_user(app, openid)
    formids = sandbox.issue_formids(app.appid, openid, count=1)
    intake = credits.take_ids(app, user, formids=formids)
    messages.success(request, _("Form submitted: %(n)d formId collected.") % {"n": intake.accepted})
    return _back_to_phone(app, openid)


@require_POST
@tenant_required
def phone_accept(request: HttpRequest, appid: str) -> HttpResponse:
    """An "accept" in ``wx.requestSubscribeMessage``: WeChat records it and the SDK reports it."""
    app = _sandbox_app_for(request, appid, write=True)
    openid = request.POST.get("openid", "")
    template = (
        Template.objects.for_tenant(request.tenant)
        .filter(app=app, kind=Template.Kind.SUBSCRIBE, template_id=request.POST.get("template_id", ""))
        .exclude(status=Template.Status.DELETED)
        .first()
    )
    if template is None:
        raise Http404
    user = _phone_user(app, openid)
    answer = sandbox.accept_subscriptions(app.appid, openid, {template.template_id: "accept"})
    if answer.get(template.template_id) != "accept":
        messages.error(
            request,
            _(
                "WeChat does not know this template (it filtered it): add it in WeChat, or sync the catalogue."
            ),
        )
        return _back_to_phone(app, openid)
    result = credits.report_subscriptions(app, user, {template.template_id: "accept"})
    if result["credited"] and template.is_long_term:
        messages.success(request, _("Long-term subscription accepted: sends do not use it up."))
    elif result["credited"]:
        messages.success(request, _("Subscription accepted: one subscribe credit."))
    else:
        messages.success(request, _("Subscription accepted: WeChat's event will add the credit."))
    return _back_to_phone(app, openid)


@require_GET
@tenant_required
@never_cache
def phone_inbox(request: HttpRequest, appid: str) -> JsonResponse:
    app = _sandbox_app_for(request, appid)
    return JsonResponse({"messages": inbox_cards(app, request.GET.get("openid", ""))})
