"""ROOT_URLCONF of the standalone sandbox (``python -m pushhub.wechat.sandbox``): WeChat paths at the root."""

from django.urls import include, path

urlpatterns = [path("", include("pushhub.wechat.sandbox.urls"))]

handler404 = "pushhub.wechat.sandbox.views.not_found"
handler500 = "pushhub.wechat.sandbox.views.server_error"
