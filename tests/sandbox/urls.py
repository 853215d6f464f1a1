"""The sandbox mounted where PushHub mounts it, without the rest of PushHub's URLs (owned by other apps)."""

from django.urls import include, path

urlpatterns = [path("sandbox/wechat/", include("pushhub.wechat.sandbox.urls"))]
