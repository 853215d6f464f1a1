"""Dashboard: the tenant's webhook endpoints, one endpoint's page and its changes, resends from its log."""

from django.urls import path

from webhooks import dashboard_views as views

urlpatterns = [
    path("webhooks/", views.webhook_list, name="webhook-list"),
    path("webhooks/<uuid:endpoint_id>/", views.webhook_detail, name="webhook-detail"),
    path("webhooks/<uuid:endpoint_id>/update", views.webhook_update, name="webhook-update"),
    path(
        "webhooks/<uuid:endpoint_id>/rotate-secret", views.webhook_rotate_secret, name="webhook-rotate-secret"
    ),
    path("webhooks/<uuid:endpoint_id>/test", views.webhook_test, name="webhook-test"),
    path("webhooks/<uuid:endpoint_id>/delete", views.webhook_delete, name="webhook-delete"),
    path(
        "webhooks/<uuid:endpoint_id>/events/<str:event_id>/resend",
        views.webhook_resend,
        name="webhook-resend",
    ),
]
