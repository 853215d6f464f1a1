"""Dashboard pages owned by the tenants app."""

from __future__ import annotations

from django.shortcuts import redirect, render


def home(request):
    """Landing page: what PushHub is and where to start; signed-in users go straight to their dashboard."""
    if request.user.is_authenticated:
        return redirect("dashboard")
    return render(request, "tenants/home.html")
