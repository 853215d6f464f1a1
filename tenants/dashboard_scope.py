"""Dashboard scoping: every page works on the signed-in user's *current tenant*, and every object is
fetched through one of these helpers, so another tenant's object is a 404 and a viewer cannot write.

(healthchecks' ``_get_check_for_user`` pattern: one ``get_<thing>_for(request, …)`` per model.)
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect

from pushhub import logs
from tenants.models import Membership, MiniProgram

SESSION_KEY = "pushhub_tenant_id"


def memberships(user):
    return Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")


def current_membership(request) -> Membership | None:
    """The membership of the tenant chosen in this session (switch_tenant), else the user's first one."""
    if not request.user.is_authenticated:
        return None
    mine = memberships(request.user)
    chosen = request.session.get(SESSION_KEY)
    membership = mine.filter(tenant_id=chosen).first() if chosen else None
    return membership or mine.first()


def choose_tenant(request, tenant_id: int) -> Membership:
    membership = memberships(request.user).filter(tenant_id=tenant_id).first()
    if membership is None:
        raise Http404
    request.session[SESSION_KEY] = membership.tenant_id
    return membership


def tenant_required(view):
    """Signed in and a member of a tenant: sets ``request.membership`` and ``request.tenant``."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        membership = current_membership(request)
        if membership is None:
            return redirect("signup")  # an account without a tenant makes one first
        request.membership, request.tenant = membership, membership.tenant
        logs.bind(tenant=membership.tenant_id)
        return view(request, *args, **kwargs)

    return wrapper


def require_write(request) -> None:
    """Viewers see everything and change nothing."""
    if not request.membership.can_write:
        raise PermissionDenied("Viewers cannot change anything.")


def require_owner(request) -> None:
    """Pages for owners only (the audit log): admins and viewers get 403."""
    if not request.membership.is_owner:
        raise PermissionDenied("Only the team's owners can see this page.")


def get_app_for(request, appid: str, *, write: bool = False) -> MiniProgram:
    app = MiniProgram.objects.live().for_tenant(request.tenant).filter(appid=appid).first()
    if app is None:
        raise Http404
    if write:
        require_write(request)
    return app


def dashboard_context(request) -> dict:
    """Template context processor: the user's tenants and the current one, for the navigation."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    membership = current_membership(request)
    return {
        "current_membership": membership,
        "current_tenant": membership.tenant if membership else None,
        "all_memberships": list(memberships(request.user)),
    }
