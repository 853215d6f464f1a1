"""Aliases and segments delivered to the sandbox over HTTP: a segment push reaches exactly its members once,
its pages fill up across blocks of users, an interrupted enumeration resumes; a scheduled alias push resolves
its aliases when it runs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from formids.models import Credit, MiniUser, UserTag
from templates_app import tasks
from templates_app.delivery import start as delivery_start
from templates_app.models import Delivery, Push

from .helpers import (
    assert_counters_match_rows,
    deliver_push_killed_at_second_page,
    inbox_counts,
    make_push,
    seed_users,
)

pytestmark = pytest.mark.django_db(transaction=True)


def tag(app, openids, *tags: str) -> None:
    users = MiniUser.objects.filter(app=app, openid__in=openids)
    UserTag.objects.bulk_create(UserTag(app=app, user=user, tag=t) for user in users for t in tags)


def chunk_sizes(task_queue) -> list[int]:
    return [len(args[1]) for task, args in task_queue.pending if task == "deliver_chunk"]


def test_a_segment_push_reaches_its_members_once_and_nobody_else(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 10
    vip = seed_users(app, 14, formids=1)
    churned_vip = seed_users(app, 3, formids=1)
    opted_out_vip = seed_users(app, 2, formids=1, push_enabled=False)
    broke_vip = seed_users(app, 2)  # no credit: not a recipient, like @all
    others = seed_users(app, 12, formids=1)
    tag(app, vip + churned_vip + opted_out_vip + broke_vip, "vip")
    tag(app, churned_vip, "churned")
    tag(app, others[:6], "city:sh")
    push = make_push(formid_template, {"tags": {"all": ["vip"], "none": ["churned"]}})

    assert tasks.deliver_push(str(push.pk)) == "started"
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in vip}
    push.refresh_from_db()
    assert (push.status, push.enumerated) == ("done", True)
    assert (push.recipients, push.sent, push.no_credit, push.opted_out, push.pending) == (16, 14, 0, 2, 0)
    assert set(push.deliveries.values_list("openid", flat=True)) == set(vip)
    assert not Credit.objects.filter(app=app, state="claimed").exists()
    assert Credit.objects.filter(app=app, state="available").count() == 3 + 2 + 12
    assert_counters_match_rows(push)


def test_a_segment_push_sent_through_the_trigger_url_reaches_the_sandbox(app, formid_template, task_queue):
    members = seed_users(app, 3, formids=1)
    tag(app, members, "vip")
    seed_users(app, 2, formids=1)
    response = Client().post(
        formid_template.trigger_path,
        json.dumps({"to": {"tags": {"any": ["vip"]}}, "data": {"keyword1": "A1", "keyword2": "9"}}),
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    assert task_queue.names() == ["deliver_push"]
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in members}
    status = Client().get(response.json()["status_url"].replace("http://testserver", "")).json()
    assert (status["status"], status["to"], status["counts"]["sent"]) == (
        "done",
        {"tags": {"any": ["vip"]}},
        3,
    )


def test_a_segments_chunks_are_full_though_its_blocks_are_not(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 10
    users = seed_users(app, 45, formids=1)
    tag(app, users[::2], "even")  # every block of 10 users holds 5 members
    push = make_push(formid_template, {"tags": {"any": ["even"]}})

    tasks.deliver_push(str(push.pk))

    assert chunk_sizes(task_queue) == [10, 10, 3]
    task_queue.run()
    assert inbox_counts(app.appid) == {openid: 1 for openid in users[::2]}


def test_a_sparse_segments_first_page_leaves_without_waiting_for_a_full_chunk(
    app, formid_template, task_queue, settings, monkeypatch
):
    settings.PUSH_CHUNK_SIZE = 10
    monkeypatch.setattr(delivery_start, "PAGE_MAX_BLOCKS", 3)
    users = seed_users(app, 60, formids=1)
    members = users[::10]  # one per block
    tag(app, members, "rare")
    push = make_push(formid_template, {"tags": {"all": ["rare"]}})

    tasks.deliver_push(str(push.pk))

    assert chunk_sizes(task_queue) == [3, 3]
    task_queue.run()
    assert inbox_counts(app.appid) == {openid: 1 for openid in members}


def test_an_interrupted_segment_enumeration_resumes_where_it_stopped(
    app, formid_template, task_queue, settings, monkeypatch
):
    settings.PUSH_CHUNK_SIZE = 4
    users = seed_users(app, 20, formids=1)
    members = users[::2]  # 10 members, two per block of 4 users
    tag(app, members, "vip")
    push = make_push(formid_template, {"tags": {"all": ["vip"]}})
    deliver_push_killed_at_second_page(push, monkeypatch)  # page 2 claimed and written, never queued
    assert chunk_sizes(task_queue) == [4]
    assert push.deliveries.count() == 8
    # A member of the page prepared but never queued loses the tag meanwhile: prepared, so still sent.
    UserTag.objects.filter(user__openid=members[5]).delete()

    assert tasks.deliver_push(str(push.pk)) == "started"  # the redelivered task
    assert chunk_sizes(task_queue) == [4, 4, 2]  # page 1 is not queued again
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in members}
    push.refresh_from_db()
    assert (push.status, push.recipients, push.sent) == ("done", 10, 10)
    assert_counters_match_rows(push)


def test_a_scheduled_alias_push_resolves_its_aliases_when_it_runs(app, formid_template, task_queue):
    alice, bob, carol = seed_users(app, 3, formids=1)
    MiniUser.objects.filter(openid=alice).update(alias="u-1")
    when = (timezone.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    body = {
        "to": {"aliases": ["u-1", "u-2", "u-3"]},
        "data": {"keyword1": "A1", "keyword2": "9"},
        "send_at": when,
    }
    answer = (
        Client().post(formid_template.trigger_path, json.dumps(body), content_type="application/json").json()
    )
    assert answer["status"] == "scheduled" and answer["unknown_aliases"] is None
    # Before it runs: u-1 moves from alice to bob, carol binds u-2; nobody holds u-3.
    MiniUser.objects.filter(openid=alice).update(alias=None)
    MiniUser.objects.filter(openid=bob).update(alias="u-1")
    MiniUser.objects.filter(openid=carol).update(alias="u-2")

    Push.objects.filter(pk=answer["push_id"]).update(send_at=timezone.now())
    assert tasks.run_scheduled_pushes()["started"] == 1
    task_queue.run()

    assert inbox_counts(app.appid) == {bob: 1, carol: 1}
    push = Push.objects.get(pk=answer["push_id"])
    assert (push.status, push.recipients, push.sent) == ("done", 2, 2)
    assert push.to == {"aliases": ["u-1", "u-2", "u-3"]}
    assert set(Delivery.objects.filter(push=push).values_list("openid", flat=True)) == {bob, carol}
    assert_counters_match_rows(push)


def test_a_scheduled_segment_push_enumerates_its_members_when_it_runs(app, formid_template, task_queue):
    push = make_push(
        formid_template, {"tags": {"any": ["vip"]}}, send_at=timezone.now() + timedelta(minutes=5)
    )
    members = seed_users(app, 3, formids=1)
    tag(app, members, "vip")  # tagged after the push was made: still reached
    seed_users(app, 2, formids=1)

    Push.objects.filter(pk=push.pk).update(send_at=timezone.now())
    tasks.run_scheduled_pushes()
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in members}
    push.refresh_from_db()
    assert (push.status, push.recipients) == ("done", 3)
