from django.urls import path

from templates_app import trigger_views

urlpatterns = [
    path("<str:token>", trigger_views.trigger, name="trigger"),
    path("<str:token>/pushes/<uuid:push_id>", trigger_views.trigger_push_status, name="trigger-push-status"),
]
