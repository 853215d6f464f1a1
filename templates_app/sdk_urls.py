"""/sdk/v1/{appid}/…: the SDK's endpoints served by templates_app (templates_app.sdk_views)."""

from django.urls import path

from templates_app import sdk_views

urlpatterns = [
    path("<str:appid>/inbox", sdk_views.InboxView.as_view(), name="sdk-inbox"),
    path("<str:appid>/inbox/read", sdk_views.InboxReadView.as_view(), name="sdk-inbox-read"),
]
