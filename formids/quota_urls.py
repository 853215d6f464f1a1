"""Dashboard: an app's credit pool (quota, charts), its users and their tags."""

from django.urls import path

from formids import quota_views as views

urlpatterns = [
    path("apps/<str:appid>/quota/", views.quota, name="app-quota"),
    path("apps/<str:appid>/quota/chart.json", views.quota_chart, name="app-quota-chart"),
    path("apps/<str:appid>/quota/funnel.json", views.quota_funnel, name="app-quota-funnel"),
    path("apps/<str:appid>/users/", views.users, name="app-users"),
    path("apps/<str:appid>/users/<str:openid>/", views.user_detail, name="app-user"),
    path("apps/<str:appid>/tags/", views.tags, name="app-tags"),
]
