"""/sdk/v1/{appid}/…: templates_app's SDK endpoints (templates_app.sdk_views): opens and the in-app inbox;
formids.sdk_urls has the rest."""

from django.urls import path

from templates_app import sdk_views

urlpatterns = [
    path("<str:appid>/opens", sdk_views.OpensView.as_view(), name="sdk-opens"),
    path("<str:appid>/inbox", sdk_views.InboxView.as_view(), name="sdk-inbox"),
    path("<str:appid>/inbox/read", sdk_views.InboxReadView.as_view(), name="sdk-inbox-read"),
]
