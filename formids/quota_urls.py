"""Dashboard: an app's credit pool (quota, charts) and its users."""

from django.urls import path

from formids import quota_views as views

urlpatterns = [
    path("apps/<str:appid>/quota/", views.quota, name="app-quota"),
    path("apps/<str:appid>/quota/chart.json", views.quota_chart, name="app-quota-chart"),
    path("apps/<str:appid>/users/", views.users, name="app-users"),
]
