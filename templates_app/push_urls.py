from django.urls import path

from templates_app.push_api import PushViewSet, TemplatePushViewSet

urlpatterns = [
    path(
        "templates/<str:id>/pushes",
        TemplatePushViewSet.as_view({"post": "create"}),
        name="api-template-pushes",
    ),
    path("pushes", PushViewSet.as_view({"get": "list"}), name="api-push-list"),
    path("pushes/<str:pk>", PushViewSet.as_view({"get": "retrieve"}), name="api-push-detail"),
    path(
        "pushes/<str:pk>/deliveries", PushViewSet.as_view({"get": "deliveries"}), name="api-push-deliveries"
    ),
    path("pushes/<str:pk>/cancel", PushViewSet.as_view({"post": "cancel"}), name="api-push-cancel"),
]
