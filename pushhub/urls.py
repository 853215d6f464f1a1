from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from pushhub import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/v1/", include("tenants.api_urls")),
    path("api/v1/", include("formids.api_urls")),
    path("api/v1/", include("templates_app.api_urls")),
    path("api/v1/", include("templates_app.push_urls")),
    path("t/", include("templates_app.trigger_urls")),
    path("sdk/v1/", include("formids.sdk_urls")),
    path("wechat/", include("formids.event_urls")),
    path("sandbox/wechat/", include("pushhub.wechat.sandbox.urls")),
    path("healthz", api.healthz, name="healthz"),
    path("", include("tenants.urls")),
]

# JSON errors (never an HTML page) under the API prefixes; HTML elsewhere.
handler404 = "pushhub.api.handler404"
handler500 = "pushhub.api.handler500"
