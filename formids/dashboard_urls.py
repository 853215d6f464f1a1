"""Dashboard: the tenant's mini-programs, registration and one app's settings."""

from django.urls import path

from formids import dashboard_views as views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("apps/new", views.app_new, name="app-new"),
    path("apps/<str:appid>/", views.app_detail, name="app-detail"),
    path("apps/<str:appid>/update", views.app_update, name="app-update"),
    path("apps/<str:appid>/rotate-events", views.app_rotate_events, name="app-rotate-events"),
    path(
        "apps/<str:appid>/rotate-identity-secret",
        views.app_rotate_identity_secret,
        name="app-rotate-identity-secret",
    ),
    path("apps/<str:appid>/delete", views.app_delete, name="app-delete"),
]
