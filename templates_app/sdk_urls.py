"""/sdk/v1/{appid}/…: templates_app's SDK endpoints (templates_app.sdk_views); formids.sdk_urls has the rest."""

from django.urls import path

from templates_app import sdk_views

urlpatterns = [
    path("<str:appid>/opens", sdk_views.OpensView.as_view(), name="sdk-opens"),
]
