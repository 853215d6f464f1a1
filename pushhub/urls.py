"""The URL map: each prefix is included from the url confs of the apps that serve it, below.

URL names are unique across all of them (tests/test_urls.py), so ``reverse()`` and ``{% url %}`` build the
link they name: /api/v1 routes are ``api-…``, /sdk/v1 ones ``sdk-…``, the trigger URLs ``trigger…``,
WeChat's ``wechat-events``; the dashboard's pages have plain names (``template-detail``).
"""

from django.contrib import admin
from django.contrib.auth import urls as auth_urls
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from pushhub import health, metrics
from tenants.login import ThrottledLoginView

urlpatterns = [
    # The hot paths first: Django tries the prefixes in order, and each one tried before the match costs.
    path("sdk/v1/", include("formids.sdk_urls")),
    path("sdk/v1/", include("templates_app.sdk_urls")),
    path("t/", include("templates_app.trigger_urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/v1/", include("tenants.api_urls")),
    path("api/v1/", include("formids.api_urls")),
    path("api/v1/", include("templates_app.api_urls")),
    path("api/v1/", include("templates_app.push_urls")),
    path("api/v1/", include("webhooks.api_urls")),
    path("wechat/", include("formids.event_urls")),
    path("sandbox/wechat/", include("pushhub.wechat.sandbox.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("i18n/", include("django.conf.urls.i18n")),
    # Sign-in is ours (brute-force protection); the other account views are django.contrib.auth's, less its
    # own login pattern, which this one would shadow: one pattern per name.
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include([p for p in auth_urls.urlpatterns if p.name != "login"])),
    path("", include("tenants.urls")),
    path("", include("tenants.dashboard_urls")),  # accounts, members, API keys
    path("dashboard/", include("formids.dashboard_urls")),  # mini-programs
    path("dashboard/", include("formids.quota_urls")),  # quotas and users
    path("dashboard/", include("templates_app.dashboard_urls")),  # templates, test sends, sandbox phone
    path("dashboard/", include("templates_app.push_page_urls")),  # pushes and live progress
    path("dashboard/", include("webhooks.dashboard_urls")),  # webhook endpoints and their attempts log
]

# JSON errors (never an HTML page) under the API prefixes; HTML elsewhere.
handler404 = "pushhub.api.handler404"
handler500 = "pushhub.api.handler500"
