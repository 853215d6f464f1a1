"""Account pages: sign-up, tenant switch, members and API keys.

Every page works on ``request.tenant`` (``tenant_required``); every object is fetched through a
``get_<thing>_for`` helper, so another tenant's member or key is a 404 and a viewer's POST is a 403.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.encoding import force_bytes
from django.utils.http import url_has_allowed_host_and_scheme, urlsafe_base64_encode
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from tenants.auth import actor_for
from tenants.dashboard_forms import ROLE_CHOICES, ApiKeyForm, InviteForm, RoleForm, SignupForm, TenantNameForm
from tenants.dashboard_scope import (
    SESSION_KEY,
    choose_tenant,
    current_membership,
    require_write,
    tenant_required,
)
from tenants.models import ApiKey, Membership, Tenant
from tenants.services import audit, create_api_key, create_tenant, revoke_api_key

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


def invite_member(request: HttpRequest, email: str, role: str) -> Membership:
    """Adds an existing user at once; an unknown e-mail gets an account without a usable password and a
    mail whose link sets it. Raises ValidationError if the user is already a member."""
    User = get_user_model()
    with transaction.atomic():
        user = (
            User.objects.filter(email__iexact=email).first()
            or User.objects.filter(username__iexact=email).first()
        )
        created = user is None
        if created:
            user = User.objects.create_user(username=email, email=email, password=None)  # unusable
        elif Membership.objects.filter(tenant=request.tenant, user=user).exists():
            raise ValidationError(_("%(email)s is already a member.") % {"email": email})
        membership = Membership.objects.create(tenant=request.tenant, user=user, role=role)
        audit(
            request.tenant, actor_for(request), "member.invite", "user", email, role=role, new_account=created
        )
    if created:
        transaction.on_commit(lambda: _send_password_set_mail(request, user, request.tenant))
    return membership


def _other_owners(membership: Membership) -> bool:
    """Locks the tenant's owners and says whether one besides ``membership`` remains."""
    owners = Membership.objects.select_for_update().filter(
        tenant=membership.tenant, role=Membership.Role.OWNER
    )
    return any(pk != membership.pk for pk in owners.values_list("pk", flat=True))


def change_role(request: HttpRequest, membership: Membership, role: str) -> None:
    with transaction.atomic():
        if (
            membership.role == Membership.Role.OWNER
            and role != Membership.Role.OWNER
            and not _other_owners(membership)
        ):
            raise ValidationError(_("A team needs at least one owner."))
        old = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit(
            request.tenant,
            actor_for(request),
            "member.role_change",
            "user",
            membership.user.email,
            old=old,
            new=role,
        )


def remove_member(request: HttpRequest, membership: Membership) -> None:
    with transaction.atomic():
        if membership.role == Membership.Role.OWNER and not _other_owners(membership):
            raise ValidationError(_("The last owner cannot be removed."))
        membership.delete()
        audit(request.tenant, actor_for(request), "member.remove", "user", membership.user.email)


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
            invite_member(request, form.cleaned_data["email"], form.cleaned_data["role"])
        except ValidationError as exc:
            form.add_error("email", exc)
        else:
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
        change_role(request, membership, form.cleaned_data["role"])
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
        remove_member(request, membership)
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
