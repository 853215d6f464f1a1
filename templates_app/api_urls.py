"""/api/v1 routes of templates_app (included from pushhub/urls.py under ``api/v1/``)."""

from django.urls import path

from templates_app.catalogue_api import AppTemplateViewSet, TemplateViewSet
from templates_app.stats_api import AppStatsViewSet

# --- the catalogue and trigger URLs (templates_app.catalogue_api) ------------------------------------
catalogue_urlpatterns = [
    path(
        "apps/<str:appid>/templates",
        AppTemplateViewSet.as_view({"get": "list", "post": "create"}),
        name="api-app-templates",
    ),
    path(
        "apps/<str:appid>/templates/sync",
        AppTemplateViewSet.as_view({"post": "sync"}),
        name="api-app-templates-sync",
    ),
    path(
        "templates/<uuid:id>",
        TemplateViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="api-template-detail",
    ),
    path(
        "templates/<uuid:id>/rotate", TemplateViewSet.as_view({"post": "rotate"}), name="api-template-rotate"
    ),
]

# --- pushes (templates_app.push_api) -----------------------------------------------------------------
# Added by the push work; nothing above imports from the push modules.
push_urlpatterns: list = []

# --- the funnel (templates_app.stats_api) ------------------------------------------------------------
stats_urlpatterns = [
    path("apps/<str:appid>/stats", AppStatsViewSet.as_view({"get": "stats"}), name="api-app-stats"),
]

urlpatterns = [*catalogue_urlpatterns, *push_urlpatterns, *stats_urlpatterns]
