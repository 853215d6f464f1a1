from django.urls import path

from webhooks.api import WebhookViewSet

urlpatterns = [
    path("webhooks", WebhookViewSet.as_view({"get": "list", "post": "create"}), name="api-webhook-list"),
    path(
        "webhooks/<uuid:pk>",
        WebhookViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="api-webhook-detail",
    ),
    path(
        "webhooks/<uuid:pk>/rotate-secret",
        WebhookViewSet.as_view({"post": "rotate_secret"}),
        name="api-webhook-rotate-secret",
    ),
    path("webhooks/<uuid:pk>/test", WebhookViewSet.as_view({"post": "test"}), name="api-webhook-test"),
    path(
        "webhooks/<uuid:pk>/attempts",
        WebhookViewSet.as_view({"get": "attempts"}),
        name="api-webhook-attempts",
    ),
    path(
        "webhooks/<uuid:pk>/events/<str:event_id>/resend",
        WebhookViewSet.as_view({"post": "resend"}),
        name="api-webhook-resend",
    ),
]
