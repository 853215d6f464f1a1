"""Dashboard: template catalogue, one template (trigger URL, curl example, test send), the sandbox phone."""

from django.urls import path

from templates_app import dashboard_views as views

urlpatterns = [
    path("apps/<str:appid>/templates/", views.template_list, name="templates"),
    path("apps/<str:appid>/templates/sync", views.template_sync, name="templates-sync"),
    path("apps/<str:appid>/phone/", views.phone, name="sandbox-phone"),
    path("apps/<str:appid>/phone/users", views.phone_new_user, name="sandbox-phone-new-user"),
    path("apps/<str:appid>/phone/form", views.phone_submit_form, name="sandbox-phone-form"),
    path("apps/<str:appid>/phone/accept", views.phone_accept, name="sandbox-phone-accept"),
    path("apps/<str:appid>/phone/inbox.json", views.phone_inbox, name="sandbox-phone-inbox"),
    path("templates/<uuid:template_pk>/", views.template_detail, name="template-detail"),
    path("templates/<uuid:template_pk>/funnel.json", views.template_funnel, name="template-funnel"),
    path("templates/<uuid:template_pk>/rotate", views.template_rotate, name="template-rotate"),
    path("templates/<uuid:template_pk>/status", views.template_status, name="template-status"),
    path("templates/<uuid:template_pk>/track-opens", views.template_track_opens, name="template-track-opens"),
    path("templates/<uuid:template_pk>/delete", views.template_delete, name="template-delete"),
    path("templates/<uuid:template_pk>/test-send", views.template_test_send, name="template-test-send"),
]
