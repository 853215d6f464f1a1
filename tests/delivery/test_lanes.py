"""Lanes and the broadcast share: a one-user send never waits behind another tenant's broadcast chunks, beat's
sweeps and the retention sweep never take a sending slot, and two tenants broadcasting at once both progress."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from pushhub.celery import app as celery_app
from templates_app import tasks
from templates_app.delivery import lanes, queue, share
from templates_app.models import Push
from tenants import services
from tests.conftest import random_appid, random_secret

from .helpers import DATA, forget_redis_queue, inbox_counts, make_push, make_template, seed_users
from .test_worker import broker, start_worker, wait_for  # noqa: F401, F811 — fixtures

QUEUES = {"SEND_QUEUE": "t-sends", "BROADCAST_QUEUE": "t-broadcast", "MAINTENANCE_QUEUE": "t-maintenance"}


@pytest.fixture
def lane_queues(settings):
    for name, value in QUEUES.items():
        setattr(settings, name, value)
    return QUEUES


def routed(name: str, *args, **options) -> str:
    """The queue Celery's router gives a task queued by name (as ``queue.enqueue`` and beat queue them)."""
    return celery_app.amqp.router.route(options, name, args, {})["queue"].name


@pytest.fixture
def sent_to(monkeypatch):
    """What the pipeline queues, with the queue the router gives each task: [(task name, queue)]."""
    sent: list[tuple[str, str]] = []

    def send_task(name, args=(), **options):
        sent.append((name, routed(name, *args, **options)))

    monkeypatch.setattr(queue.celery_app, "send_task", send_task)
    return sent


def post(api, template, body):
    response = api.post(f"/api/v1/templates/{template.pk}/pushes", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_a_one_user_trigger_goes_to_the_sends_lane_and_a_broadcast_to_the_broadcast_lane(
    api, app, lane_queues, sent_to
):
    template = make_template(app, "formid")
    (user,) = seed_users(app, 1, formids=1)
    seed_users(app, 3, formids=1)

    post(api, template, {"to": user, "data": DATA["formid"]})
    assert sent_to == [("templates_app.deliver_chunk", "t-sends")]

    sent_to.clear()
    broadcast = post(api, template, {"to": "@all", "data": DATA["formid"]})
    assert sent_to == [("templates_app.deliver_push", "t-broadcast")]

    # The broadcast's chunks, and their retries and requeues, in the same process or another one (the
    # lookup): the broadcast lane.
    lanes._memo.clear()
    queue.enqueue_chunk(broadcast["push_id"], [1, 2], countdown=3)
    assert sent_to[-1] == ("templates_app.deliver_chunk", "t-broadcast")


@pytest.mark.django_db
def test_a_listed_push_above_the_threshold_is_a_broadcast(app, settings):
    template = make_template(app, "formid")
    users = seed_users(app, 3, formids=1)
    settings.SEND_LANE_MAX_RECIPIENTS = 2
    assert lanes.lane_of(make_push(template, to=users[:2])) == lanes.SENDS
    assert lanes.lane_of(make_push(template, to=users)) == lanes.BROADCAST
    assert lanes.lane_of(make_push(template, to={"tags": {"any": ["vip"]}})) == lanes.BROADCAST


def test_sweeps_and_retention_go_to_the_maintenance_lane_and_hold_releases_to_the_sends_lane(lane_queues):
    for name in (
        "templates_app.run_scheduled_pushes",
        "templates_app.sweep_holds",
        "templates_app.sweep_retention",
        "formids.expire_credits",
        "formids.release_stale_claims",
    ):
        assert routed(name) == "t-maintenance", name
    assert routed("templates_app.release_holds", 7) == "t-sends"
    # Every beat entry of the pipeline has a lane (none falls back to a sending queue).
    for entry in celery_app.conf.beat_schedule.values():
        if entry["task"].startswith(("templates_app.", "formids.")):
            assert routed(entry["task"]) == "t-maintenance", entry["task"]
    # A queue given by the caller wins (the webhook workers' own queue).
    assert routed("webhooks.drain_endpoint", "x", queue="hooks") == "hooks"


def test_the_queue_metrics_list_every_lane(lane_queues):
    from pushhub import metrics

    assert {"t-sends", "t-broadcast", "t-maintenance"} <= set(metrics.queue_names())


# --- the broadcast share -------------------------------------------------------------------------------
@pytest.fixture
def two_tenants_broadcasting(app, other_tenant, settings, monkeypatch):
    """A broadcast push of each of two tenants, a Redis share of this test's own, and the chunks the share
    queues again recorded: (push A, push B, queued)."""
    if share._redis_client() is None:
        pytest.skip("the broadcast share needs the Redis cache")
    settings.BROADCAST_SHARE = True
    other_app = services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    pushes = (make_push(make_template(app, "formid")), make_push(make_template(other_app, "formid")))
    queued: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        queue, "enqueue_chunk", lambda push_id, ids, countdown=None: queued.append((push_id, ids))
    )
    yield (*pushes, queued)
    client = share._redis_client()
    for key in client.keys(cache.make_and_validate_key("share:*")):
        client.delete(key)


def chunk(push: Push, ids: list[int], token: str, then=None) -> dict:
    """Run a chunk of ``push`` through the share; ``then`` runs while it is running (another chunk at once)."""
    return share.run_chunk(push.pk, ids, token, lambda: then() if then else {"sent": len(ids)})


@pytest.mark.django_db
def test_a_second_tenants_chunk_runs_while_the_first_tenant_is_held_to_its_share(two_tenants_broadcasting):
    a, b, queued = two_tenants_broadcasting
    seen = {}

    def inside_b1():
        seen["a3"] = chunk(a, [3], "a3")  # A runs 2 of 3: its share is 2
        seen["b2"] = chunk(b, [12], "b2")  # B runs 1 of 3: it may take another
        return {"sent": 1}

    def inside_a2():
        seen["b1"] = chunk(b, [11], "b1", then=inside_b1)  # B's first chunk always starts
        return {"sent": 1}

    def inside_a1():
        seen["a2"] = chunk(a, [2], "a2", then=inside_a2)  # alone, A may take every slot
        return {"sent": 1}

    chunk(a, [1], "a1", then=inside_a1)

    assert seen == {"a2": {"sent": 1}, "b1": {"sent": 1}, "a3": {"parked": 1}, "b2": {"sent": 1}}
    # When the chunks finished, A's parked chunk was queued again (its rows untouched meanwhile).
    assert queued == [(str(a.pk), [3])]


@pytest.mark.django_db
def test_a_lease_of_a_crashed_worker_expires_and_its_tenants_parked_chunk_is_queued_again(
    two_tenants_broadcasting, settings
):
    a, b, queued = two_tenants_broadcasting
    client = share._redis_client()
    settings.BROADCAST_SHARE_LEASE = 0.5
    # Two chunks of A whose worker was SIGKILLed: their leases taken, never given back.
    assert share._take(client, str(a.tenant_id), "killed-1") and share._take(
        client, str(a.tenant_id), "killed-2"
    )
    settings.BROADCAST_SHARE_LEASE = 60

    def inside_b1():
        assert chunk(a, [3], "a3") == {"parked": 1}  # A counts 2 running: its share of 3 slots is 2
        assert tasks.run_scheduled_pushes(3600)["unparked"] == 0  # beat's pump: the dead leases still count
        time.sleep(0.6)
        # Once they expired, A runs nothing: beat's pump queues its chunk again while B still runs.
        assert tasks.run_scheduled_pushes(3600)["unparked"] == 1
        return {"sent": 1}

    chunk(b, [11], "b1", then=inside_b1)
    assert queued == [(str(a.pk), [3])]


@pytest.mark.django_db
def test_a_chunk_of_the_sends_lane_or_without_the_share_runs_at_once(two_tenants_broadcasting, settings):
    a, b, queued = two_tenants_broadcasting
    client = share._redis_client()
    for token in ("x1", "x2", "x3"):
        share._take(client, str(a.tenant_id), token)
    assert chunk(b, [1], "b1", then=lambda: chunk(a, [2], "a2")) == {"parked": 1}

    listed = make_push(a.template, to=["oListed000000000000000000001"])
    assert chunk(listed, [5], "l1") == {"sent": 1}  # a transactional send: never held to a share
    settings.BROADCAST_SHARE = False
    assert chunk(a, [6], "a6") == {"sent": 1}


# --- real workers ------------------------------------------------------------------------------------------
def test_a_one_user_send_is_delivered_while_a_broadcasts_chunks_wait(
    app,
    other_tenant,
    broker,  # noqa: F811 — the fixtures of test_worker.py
    start_worker,  # noqa: F811
    settings,
):
    """No worker consumes the broadcast lane: the broadcast's work waits, and another tenant's one-user send
    is delivered by the sends worker all the same."""
    if broker.kind == "filesystem":
        pytest.skip(
            "the pipeline queues through the configured broker; this test's worker reads its directory"
        )
    broadcast_queue = f"{broker.queue}-broadcast"
    lanes_env = {
        "SEND_QUEUE": broker.queue,
        "BROADCAST_QUEUE": broadcast_queue,
        "MAINTENANCE_QUEUE": broadcast_queue,
    }
    for name, value in lanes_env.items():
        setattr(settings, name, value)
    try:
        start_worker("threads", **lanes_env)
        template = make_template(app, "formid")
        seed_users(app, 50, formids=1)
        broadcast = make_push(template)
        queue.enqueue_push(broadcast.pk)

        other_app = services.register_app(
            other_tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
        )
        (user,) = seed_users(other_app, 1, formids=1)
        one = make_push(make_template(other_app, "formid"), to=[user])
        queue.enqueue_chunk(one.pk, list(one.deliveries.values_list("pk", flat=True)))

        wait_for(lambda: Push.objects.get(pk=one.pk).status == "done", 30, "the one-user send")
        assert inbox_counts(other_app.appid) == {user: 1}
        assert Push.objects.get(pk=broadcast.pk).status == "queued"  # its enumeration still waits its lane
    finally:
        if broker.kind == "redis":  # the broadcast's waiting tasks
            forget_redis_queue(settings.CELERY_BROKER_URL, broadcast_queue)
