"""WeChat's message push, mounted at ``/wechat/`` by pushhub/urls.py."""

from django.urls import path

from formids import event_views

urlpatterns = [
    path("<str:appid>/events", event_views.wechat_events, name="wechat-events"),
]
