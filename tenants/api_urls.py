from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants.api import AccessTokenViewSet, AppViewSet

router = SimpleRouter(trailing_slash=False)
router.register("apps", AppViewSet, basename="api-app")

urlpatterns = [
    path(
        "apps/<str:appid>/access-token",
        AccessTokenViewSet.as_view({"get": "retrieve"}),
        name="api-app-access-token",
    ),
    *router.urls,
]
