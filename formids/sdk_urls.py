"""/sdk/v1/{appid}/…: the mini-program SDK's endpoints (formids.sdk_views)."""

from django.urls import path

from formids import sdk_views

urlpatterns = [
    path("<str:appid>/login", sdk_views.LoginView.as_view(), name="sdk-login"),
    path("<str:appid>/formids", sdk_views.FormidsView.as_view(), name="sdk-formids"),
    path("<str:appid>/subscriptions", sdk_views.SubscriptionsView.as_view(), name="sdk-subscriptions"),
    path("<str:appid>/me", sdk_views.MeView.as_view(), name="sdk-me"),
    path("<str:appid>/identify", sdk_views.IdentifyView.as_view(), name="sdk-identify"),
    path("<str:appid>/settings", sdk_views.SettingsView.as_view(), name="sdk-settings"),
]
