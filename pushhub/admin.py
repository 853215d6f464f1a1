"""What the apps' admin consoles share."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """History (pushes, deliveries, webhook events and attempts): looked at, never written in the admin; the
    workers and the services write it. No full count on these big tables."""

    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
