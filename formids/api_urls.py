from django.urls import path

from formids.api import AppQuotaViewSet

urlpatterns = [
    path("apps/<str:appid>/quota", AppQuotaViewSet.as_view({"get": "quota"}), name="api-app-quota"),
    path("apps/<str:appid>/users", AppQuotaViewSet.as_view({"get": "users"}), name="api-app-users"),
    path(
        "apps/<str:appid>/users/<str:openid>", AppQuotaViewSet.as_view({"get": "user"}), name="api-app-user"
    ),
]
