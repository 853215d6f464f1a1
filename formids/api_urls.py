from django.urls import path

from formids.api import AppQuotaViewSet, AppTagViewSet

urlpatterns = [
    path("apps/<str:appid>/quota", AppQuotaViewSet.as_view({"get": "quota"}), name="api-app-quota"),
    path("apps/<str:appid>/users", AppQuotaViewSet.as_view({"get": "users"}), name="api-app-users"),
    path(
        "apps/<str:appid>/users/<str:openid>",
        AppQuotaViewSet.as_view({"get": "user", "patch": "update_user"}),
        name="api-app-user",
    ),
    path("apps/<str:appid>/tags", AppTagViewSet.as_view({"get": "tags"}), name="api-app-tags"),
    path(
        "apps/<str:appid>/tags/<str:tag>/members",
        AppTagViewSet.as_view({"post": "add_members", "delete": "remove_members"}),
        name="api-app-tag-members",
    ),
]
