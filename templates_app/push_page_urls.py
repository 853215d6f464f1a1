"""Dashboard: pushes, one push with live progress and deliveries, cancel."""

from django.urls import path

from templates_app import push_pages as views

urlpatterns = [
    path("pushes/", views.push_list, name="push-list-page"),
    path("pushes/<uuid:push_id>/", views.push_page, name="push-page"),
    path("pushes/<uuid:push_id>/progress.json", views.push_progress, name="push-progress"),
    path("pushes/<uuid:push_id>/cancel", views.push_cancel, name="push-cancel"),
]
