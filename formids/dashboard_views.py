"""Dashboard pages for mini-programs: the list (with reach and credits), registration, and one app's page
(WeChat 消息推送 settings, the identity secret, credit source, secret, rotation, deletion).

Every app comes through ``get_app_for`` (another tenant's app is a 404) and every change through
``tenants.services`` (same validation and WeChat check as the API); their ``ApiError`` becomes a form error.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from formids.quotas import app_quota
from pushhub.api import ApiError, absolute_url
from tenants import services
from tenants.auth import actor_for
from tenants.dashboard_scope import get_app_for, require_write, tenant_required
from tenants.models import MiniProgram

MAX_NAME = 100


def error_message(exc: ApiError) -> str:
    """The service's message, translated when the catalogue knows it, with WeChat's code when there is one."""
    text = _(exc.message)
    errcode = exc.extra.get("errcode")
    return f"{text} (errcode {errcode})" if errcode is not None else text


@require_http_methods(["GET"])
@tenant_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The tenant's mini-programs: a fixed number of grouped queries per app (app_quota)."""
    apps = MiniProgram.objects.live().for_tenant(request.tenant).order_by("name", "appid")
    rows = []
    for app in apps:
        quota = app_quota(app)
        rows.append(
            {"app": app, "quota": quota, "subscribe_total": sum(quota["credits"]["subscribe"].values())}
        )
    return render(request, "formids/apps.html", {"rows": rows, "can_write": request.membership.can_write})


@require_http_methods(["GET", "POST"])
@tenant_required
def app_new(request: HttpRequest) -> HttpResponse:
    values = {"appid": "", "name": "", "sandbox": True}
    errors: dict[str, str] = {}
    if request.method == "POST":
        require_write(request)
        values = {
            "appid": request.POST.get("appid", "").strip(),
            "name": request.POST.get("name", "").strip(),
            "sandbox": request.POST.get("sandbox") == "on",
        }
        secret = request.POST.get("secret", "").strip()
        if not values["name"]:
            errors["name"] = _("Give the mini-program a name.")
        elif len(values["name"]) > MAX_NAME:
            errors["name"] = _("The name must be at most 100 characters.")
        else:
            try:
                app = services.register_app(
                    request.tenant,
                    appid=values["appid"],
                    secret=secret,
                    name=values["name"],
                    sandbox_app=values["sandbox"],
                    actor=actor_for(request),
                )
            except ApiError as exc:
                errors[exc.field or "form"] = error_message(exc)
            else:
                messages.success(request, _("Mini-program registered."))
                return redirect("app-detail", appid=app.appid)
    return render(request, "formids/apps_new.html", {"values": values, "errors": errors})


def _detail_context(request: HttpRequest, app: MiniProgram, errors: dict) -> dict:
    can_write = request.membership.can_write
    return {
        "app": app,
        "events_url": absolute_url(request, app.events_path),
        "aes_key": app.get_events_aes_key(),
        # As in the API: only those who may change things see it (with it anyone can bind any alias).
        "identity_secret": app.get_identity_secret() if can_write and app.identity_secret_ciphertext else "",
        "quota": app_quota(app),
        "can_write": can_write,
        "credit_sources": MiniProgram.CreditSource.choices,
        "errors": errors,
    }


@require_http_methods(["GET"])
@tenant_required
def app_detail(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid)
    return render(request, "formids/apps_detail.html", _detail_context(request, app, {}))


def _detail_with_errors(request: HttpRequest, app: MiniProgram, errors: dict) -> HttpResponse:
    return render(request, "formids/apps_detail.html", _detail_context(request, app, errors), status=400)


@require_POST
@tenant_required
def app_update(request: HttpRequest, appid: str) -> HttpResponse:
    """Name, credit source, the in-app inbox, or a new secret (checked with WeChat for a real app, as the API does)."""
    app = get_app_for(request, appid, write=True)
    changes: dict = {}
    if "credit_source" in request.POST:
        source = request.POST["credit_source"]
        if source not in MiniProgram.CreditSource.values:
            return _detail_with_errors(request, app, {"credit_source": _("Unknown credit source.")})
        changes["credit_source"] = source
    if "inbox_enabled" in request.POST:
        inbox = request.POST["inbox_enabled"]
        if inbox not in ("on", "off"):
            return _detail_with_errors(request, app, {"inbox_enabled": _("Choose on or off.")})
        changes["inbox_enabled"] = inbox == "on"
    if "name" in request.POST:
        name = request.POST["name"].strip()
        if not name or len(name) > MAX_NAME:
            return _detail_with_errors(request, app, {"name": _("The name must be 1 to 100 characters.")})
        changes["name"] = name
    if "secret" in request.POST:
        changes["secret"] = request.POST["secret"].strip()
    try:
        services.update_app(app, actor=actor_for(request), **changes)
    except ApiError as exc:
        return _detail_with_errors(request, app, {exc.field or "form": error_message(exc)})
    messages.success(request, _("Saved."))
    return redirect("app-detail", appid=app.appid)


@require_POST
@tenant_required
def app_rotate_events(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid, write=True)
    services.rotate_events_credentials(app, actor=actor_for(request))
    messages.success(request, _("New Token and EncodingAESKey: paste them into WeChat's 消息推送配置 now."))
    return redirect("app-detail", appid=app.appid)


@require_POST
@tenant_required
def app_rotate_identity_secret(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid, write=True)
    services.rotate_identity_secret(app, actor=actor_for(request))
    messages.success(
        request, _("New identity secret: give it to your server now; the old one no longer works.")
    )
    return redirect(reverse("app-detail", args=[app.appid]) + "#identity")


@require_POST
@tenant_required
def app_delete(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid, write=True)
    services.delete_app(app, actor=actor_for(request))
    messages.success(request, _("Mini-program deleted."))
    return redirect(reverse("dashboard"))
