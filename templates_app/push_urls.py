from django.urls import path

from templates_app.push_api import PushViewSet, TemplatePushViewSet

urlpatterns = [
    path(
        "templates/<str:id>/pushes", TemplatePushViewSet.as_view({"post": "create"}), name="template-pushes"
    ),
    path("pushes", PushViewSet.as_view({"get": "list"}), name="push-list"),
    path("pushes/<str:pk>", PushViewSet.as_view({"get": "retrieve"}), name="push-detail"),
    path("pushes/<str:pk>/deliveries", PushViewSet.as_view({"get": "deliveries"}), name="push-deliveries"),
    path("pushes/<str:pk>/cancel", PushViewSet.as_view({"post": "cancel"}), name="push-cancel"),
]
