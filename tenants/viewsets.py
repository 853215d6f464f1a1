"""The base for every tenant-owned API view: its queryset is always the request tenant's."""

from __future__ import annotations

from rest_framework import viewsets


class TenantScopedViewSet(viewsets.GenericViewSet):
    """Subclasses set ``tenant_queryset`` (a queryset with ``for_tenant``) and never override
    ``get_queryset``: an object of another tenant is simply not found (404), never revealed."""

    tenant_queryset = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__} must not override get_queryset; set tenant_queryset instead")

    @property
    def tenant(self):
        return self.request.auth.tenant

    def get_queryset(self):
        return self.tenant_queryset.all().for_tenant(self.tenant)
