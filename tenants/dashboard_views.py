"""Account pages: sign-up, tenant switch, members, API keys and the audit log.

Every page works on ``request.tenant`` (``tenant_required``); every object is fetched through a
``get_<thing>_for`` helper, so another tenant's member or key is a 404 and a viewer's POST is a 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.encoding import force_bytes
from django.utils.http import url_has_allowed_host_and_scheme, urlsafe_base64_encode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from tenants.auth import actor_for
from tenants.dashboard_forms import ROLE_CHOICES, ApiKeyForm, InviteForm, RoleForm, SignupForm, TenantNameForm
from tenants.dashboard_scope import (
    SESSION_KEY,
    choose_tenant,
    current_membership,
    require_owner,
    require_write,
    tenant_required,
)
from tenants.models import ApiKey, AuditEvent, Membership, Tenant
from tenants.services import (
    AUDIT_ACTIONS,
    audit_action_prefixes,
    audit_events_for,
    change_member_role,
    create_api_key,
    create_tenant,
    invite_member,
    remove_member,
    revoke_api_key,
)

NEW_KEY_SESSION_KEY = "pushhub_new_api_key"
ROLE_LABELS = dict(ROLE_CHOICES)


def _dashboard_url() -> str:
    try:
        return reverse("dashboard")
    except NoReverseMatch:  # the mini-program pages are built in parallel; until then, the landing page
        return reverse("home")


# --- sign-up -----------------------------------------------------------------------------------------
@never_cache
def signup(request: HttpRequest) -> HttpResponse:
    """A new account with its team; a signed-in user without a team (sent here by tenant_required) only
    names the team."""
    if request.user.is_authenticated and current_membership(request) is not None:
        return redirect(_dashboard_url())
    signed_in = request.user.is_authenticated
    form_class = TenantNameForm if signed_in else SignupForm
    form = form_class(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if signed_in:
            new = create_tenant(data["tenant_name"], request.user.email or request.user.get_username())
        else:
            new = create_tenant(data["tenant_name"], data["email"], password=data["password"])
            login(request, new.user, backend=settings.AUTHENTICATION_BACKENDS[0])
        request.session[SESSION_KEY] = new.tenant.pk
        messages.success(
            request, _("Welcome to PushHub! Your team %(name)s is ready.") % {"name": new.tenant.name}
        )
        return redirect(_dashboard_url())
    return render(request, "tenants/signup.html", {"form": form, "signed_in": signed_in})


# --- tenant switch -----------------------------------------------------------------------------------
@login_required
@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    try:
        tenant_id = int(request.POST.get("tenant", ""))
    except ValueError:
        raise Http404 from None
    choose_tenant(request, tenant_id)  # 404 unless the user is a member
    target = request.POST.get("next") or request.META.get("HTTP_REFERER")
    safe = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return redirect(target if safe else _dashboard_url())


# --- members -----------------------------------------------------------------------------------------
def get_membership_for(request: HttpRequest, membership_id: int, *, write: bool = False) -> Membership:
    membership = (
        Membership.objects.filter(tenant=request.tenant, pk=membership_id).select_related("user").first()
    )
    if membership is None:
        raise Http404
    if write:
        require_write(request)
    return membership


def _send_password_set_mail(request: HttpRequest, user, tenant: Tenant) -> None:
    """Django's reset-token machinery sets the first password: the link is password_reset_confirm's."""
    path = reverse(
        "password_reset_confirm",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
    context = {
        "tenant": tenant,
        "inviter": request.user,
        "link": request.build_absolute_uri(path),
        "user": user,
    }
    subject = render_to_string("tenants/invite_subject.txt", context).strip()
    send_mail(subject, render_to_string("tenants/invite_email.txt", context), None, [user.email])


def _members_page(
    request: HttpRequest, invite_form: InviteForm | None = None, status: int = 200
) -> HttpResponse:
    members = list(
        Membership.objects.filter(tenant=request.tenant).select_related("user").order_by("user__email")
    )
    for member in members:
        member.role_label = ROLE_LABELS.get(member.role, member.role)
    context = {
        "members": members,
        "invite_form": invite_form or InviteForm(),
        "role_choices": ROLE_CHOICES,
        "can_write": request.membership.can_write,
    }
    return render(request, "tenants/members.html", context, status=status)


@tenant_required
@require_GET
def members(request: HttpRequest) -> HttpResponse:
    return _members_page(request)


@tenant_required
@require_POST
def member_invite(request: HttpRequest) -> HttpResponse:
    require_write(request)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            membership, new_account = invite_member(
                request.tenant,
                form.cleaned_data["email"],
                form.cleaned_data["role"],
                actor=actor_for(request),
            )
        except ValidationError as exc:
            form.add_error("email", exc)
        else:
            if new_account:
                transaction.on_commit(
                    lambda: _send_password_set_mail(request, membership.user, request.tenant)
                )
            messages.success(
                request, _("%(email)s was added to the team.") % {"email": form.cleaned_data["email"]}
            )
            return redirect("members")
    return _members_page(request, form, status=400)


@tenant_required
@require_POST
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = get_membership_for(request, membership_id, write=True)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose a valid role."))
        return redirect("members")
    try:
        change_member_role(membership, form.cleaned_data["role"], actor=actor_for(request))
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        messages.success(request, _("Role changed."))
    return redirect("members")


@tenant_required
@require_POST
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = get_membership_for(request, membership_id, write=True)
    try:
        remove_member(membership, actor=actor_for(request))
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        messages.success(
            request, _("%(email)s was removed from the team.") % {"email": membership.user.email}
        )
    return redirect("members")


# --- API keys ----------------------------------------------------------------------------------------
def get_api_key_for(request: HttpRequest, prefix: str, *, write: bool = False) -> ApiKey:
    key = ApiKey.objects.for_tenant(request.tenant).filter(prefix=prefix).first()
    if key is None:
        raise Http404
    if write:
        require_write(request)
    return key


@tenant_required
def api_keys(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST":
        require_write(request)
        if form.is_valid():
            key, raw = create_api_key(
                request.tenant,
                form.cleaned_data["scope"],
                name=form.cleaned_data["name"],
                created_by=request.user,
                actor=actor_for(request),
            )
            request.session[NEW_KEY_SESSION_KEY] = {"prefix": key.prefix, "raw": raw}
            return redirect("api-key-created")
    keys = ApiKey.objects.for_tenant(request.tenant).select_related("created_by").order_by("-created_at")
    context = {"keys": keys, "form": form, "can_write": request.membership.can_write}
    return render(request, "tenants/api_keys.html", context, status=400 if form.errors else 200)


@never_cache
@tenant_required
@require_GET
def api_key_created(request: HttpRequest) -> HttpResponse:
    """Shows the full key once: it leaves the session as it is rendered and is stored nowhere else."""
    new = request.session.pop(NEW_KEY_SESSION_KEY, None)
    if not new:
        return redirect("api-keys")
    key = get_api_key_for(request, new["prefix"])
    return render(request, "tenants/api_key_created.html", {"key": key, "raw_key": new["raw"]})


@tenant_required
@require_POST
def api_key_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    key = get_api_key_for(request, prefix, write=True)
    revoke_api_key(key, actor=actor_for(request))
    messages.success(request, _("The key phk_%(prefix)s… was revoked.") % {"prefix": key.prefix})
    return redirect("api-keys")


# --- audit log ---------------------------------------------------------------------------------------
AUDIT_PAGE_SIZE = 50
ACTION_LABELS = {
    "tenant.create": _lazy("Created the team"),
    "member.invite": _lazy("Invited a member"),
    "member.role_change": _lazy("Changed a member's role"),
    "member.remove": _lazy("Removed a member"),
    "api_key.create": _lazy("Created an API key"),
    "api_key.revoke": _lazy("Revoked an API key"),
    "app.create": _lazy("Registered a mini-program"),
    "app.update": _lazy("Changed a mini-program"),
    "app.secret_change": _lazy("Replaced a mini-program's AppSecret"),
    "app.events_credentials_rotate": _lazy("Rotated the events Token and EncodingAESKey"),
    "app.identity_secret_rotate": _lazy("Rotated the identity secret"),
    "app.delete": _lazy("Deleted a mini-program"),
    "template.sync": _lazy("Synced templates from WeChat"),
    "template.create": _lazy("Added a template"),
    "template.update": _lazy("Changed a template"),
    "template.rotate_trigger_url": _lazy("Rotated a trigger URL"),
    "template.delete": _lazy("Deleted a template"),
    "push.cancel": _lazy("Canceled a push"),
    "webhook.create": _lazy("Added a webhook endpoint"),
    "webhook.update": _lazy("Changed a webhook endpoint"),
    "webhook.rotate_secret": _lazy("Rotated a webhook signing secret"),
    "webhook.delete": _lazy("Deleted a webhook endpoint"),
    "webhook.disable": _lazy("Disabled a failing webhook endpoint"),
    "webhook.resend": _lazy("Resent a webhook event"),
}
FAMILY_LABELS = {
    "tenant": _lazy("Team"),
    "member": _lazy("Members"),
    "api_key": _lazy("API keys"),
    "app": _lazy("Mini-programs"),
    "template": _lazy("Templates"),
    "push": _lazy("Pushes"),
    "webhook": _lazy("Webhooks"),
}
OBJECT_TYPE_LABELS = {
    "tenant": _lazy("Team"),
    "user": _lazy("Member"),
    "api_key": _lazy("API key"),
    "app": _lazy("Mini-program"),
    "template": _lazy("Template"),
    "push": _lazy("Push"),
    "webhook": _lazy("Webhook endpoint"),
}


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _detail(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _audit_row(event: AuditEvent) -> dict:
    obj = f"phk_{event.object_id}…" if event.object_type == "api_key" else event.object_id
    return {
        "when": _utc_iso(event.created_at),
        "actor": event.actor,
        "action": event.action,
        "label": ACTION_LABELS.get(event.action, event.action),
        "object_type": OBJECT_TYPE_LABELS.get(event.object_type, event.object_type),
        "object": obj,
        "details": [(key, _detail(value)) for key, value in sorted(event.data.items())],
    }


def _action_choices() -> list[tuple[str, str]]:
    choices = []
    for prefix in audit_action_prefixes():
        if "." in prefix:
            choices.append((prefix, f"{ACTION_LABELS.get(prefix, prefix)} ({prefix})"))
        else:
            family = FAMILY_LABELS.get(prefix, prefix)
            choices.append((prefix, _("%(family)s: every action") % {"family": family}))
    return choices


@tenant_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    """Who did what in this team, newest first; for owners only. Unknown filter values are ignored."""
    require_owner(request)
    action = request.GET.get("action", "")
    action = action if action in audit_action_prefixes() else ""
    object_type = request.GET.get("type", "")
    object_type = object_type if object_type in AUDIT_ACTIONS else ""
    events = audit_events_for(request.tenant, action=action, object_type=object_type)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = {name: value for name, value in (("action", action), ("type", object_type)) if value}
    context = {
        "page": page,
        "rows": [_audit_row(event) for event in page.object_list],
        "action": action,
        "object_type": object_type,
        "action_choices": _action_choices(),
        "object_type_choices": [(t, OBJECT_TYPE_LABELS.get(t, t)) for t in AUDIT_ACTIONS],
        "querystring": urlencode(query),
    }
    return render(request, "tenants/audit_log.html", context)
