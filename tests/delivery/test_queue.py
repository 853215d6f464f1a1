"""templates_app.delivery.queue: the one place the pipeline's tasks are queued from."""

from __future__ import annotations

import logging

from pushhub.celery import app as celery_app
from templates_app import tasks
from templates_app.delivery import queue


def test_every_task_the_pipeline_queues_by_name_is_a_registered_celery_task():
    # Tasks are sent by name: a name that matches no task would be queued and never run.
    for short_name, celery_name in queue.TASKS.items():
        assert celery_name in celery_app.tasks
        assert getattr(tasks, short_name).name == celery_name


def test_a_new_push_is_queued_only_once_its_transaction_commits(
    db, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(queue, "enqueue", lambda task, *args, countdown=None: queued.append((task, args)))
    with django_capture_on_commit_callbacks(execute=True):
        queue.start_after_commit("push-1", chunk=[3, 4])
        queue.start_after_commit("push-2")
        assert queued == []  # nothing leaves before the push is committed
    assert queued == [("deliver_chunk", ("push-1", [3, 4])), ("deliver_push", ("push-2",))]


def test_a_broker_that_is_down_does_not_fail_the_request_that_created_the_push(
    db, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    def broker_down(task, *args, countdown=None):
        raise ConnectionError("broker down")

    monkeypatch.setattr(queue, "enqueue", broker_down)
    with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
        queue.start_after_commit("push-3")
    assert "stuck-push sweep will queue it again" in caplog.text  # the sweep picks it up, nothing is lost
