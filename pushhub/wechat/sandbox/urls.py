"""Sandbox routes, relative to its base: ``/sandbox/wechat/`` inside PushHub, ``/`` when standalone.

WeChat paths mirror ``https://api.weixin.qq.com`` exactly, so pointing the client's base URL here is enough.
"""

from django.urls import path

from . import views

app_name = "sandbox"

urlpatterns = [
    # WeChat-compatible
    path("cgi-bin/token", views.token, name="token"),
    path("cgi-bin/stable_token", views.stable_token, name="stable_token"),
    path("sns/jscode2session", views.jscode2session, name="jscode2session"),
    path("cgi-bin/message/wxopen/template/send", views.template_send, name="template_send"),
    path("cgi-bin/message/subscribe/send", views.subscribe_send, name="subscribe_send"),
    path("wxaapi/newtmpl/gettemplate", views.get_subscribe_templates, name="gettemplate"),
    path("wxaapi/newtmpl/deltemplate", views.delete_subscribe_template, name="deltemplate"),
    path("cgi-bin/wxopen/template/list", views.list_formid_templates, name="template_list"),
    path("cgi-bin/wxopen/template/del", views.delete_formid_template, name="template_del"),
    # control
    path("_control/apps", views.apps, name="control_apps"),
    path("_control/apps/<str:appid>", views.app_detail, name="control_app"),
    path("_control/apps/<str:appid>/knobs", views.app_knobs, name="control_knobs"),
    path("_control/apps/<str:appid>/reset-tokens", views.reset_tokens, name="control_reset_tokens"),
    path("_control/apps/<str:appid>/users", views.users, name="control_users"),
    path("_control/apps/<str:appid>/users/<str:openid>", views.user_detail, name="control_user"),
    path(
        "_control/apps/<str:appid>/users/<str:openid>/login-code", views.login_code, name="control_login_code"
    ),
    path("_control/apps/<str:appid>/users/<str:openid>/formids", views.formids, name="control_formids"),
    path(
        "_control/apps/<str:appid>/users/<str:openid>/subscriptions",
        views.subscriptions,
        name="control_subscriptions",
    ),
    path(
        "_control/apps/<str:appid>/users/<str:openid>/subscriptions/<str:template_id>/off",
        views.subscription_off,
        name="control_subscription_off",
    ),
    path("_control/apps/<str:appid>/events", views.app_events, name="control_events"),
    path("_control/apps/<str:appid>/templates", views.templates, name="control_templates"),
    path(
        "_control/apps/<str:appid>/templates/<str:template_id>",
        views.template_detail,
        name="control_template",
    ),
    path("_control/apps/<str:appid>/inbox", views.inbox, name="control_inbox"),
    path("_control/apps/<str:appid>/stats", views.stats, name="control_stats"),
]
