"""Dashboard pages owned by the tenants app."""

from __future__ import annotations

from django.shortcuts import render

from tenants.models import Membership, MiniProgram


def home(request):
    """Landing page: what PushHub is, where the docs are, and (signed in) your tenants' mini-programs."""
    memberships = []
    if request.user.is_authenticated:
        memberships = list(Membership.objects.filter(user=request.user).select_related("tenant"))
    apps_by_tenant = [
        (m, MiniProgram.objects.live().for_tenant(m.tenant).order_by("name")) for m in memberships
    ]
    return render(request, "tenants/home.html", {"apps_by_tenant": apps_by_tenant})
