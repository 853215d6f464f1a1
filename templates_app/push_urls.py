from django.urls import path

from templates_app.push_api import PushViewSet, TemplatePushViewSet

urlpatterns = [
    path(
        "templates/<uuid:id>/pushes",
        TemplatePushViewSet.as_view({"post": "create"}),
        name="api-template-pushes",
    ),
    path("pushes", PushViewSet.as_view({"get": "list"}), name="api-push-list"),
    path("pushes/<uuid:pk>", PushViewSet.as_view({"get": "retrieve"}), name="api-push-detail"),
    path(
        "pushes/<uuid:pk>/deliveries", PushViewSet.as_view({"get": "deliveries"}), name="api-push-deliveries"
    ),
    path("pushes/<uuid:pk>/cancel", PushViewSet.as_view({"post": "cancel"}), name="api-push-cancel"),
]
