"""Lanes and the broadcast share: a one-user send never waits behind another tenant's broadcast chunks, beat's
sweeps and the retention sweep never take a sending slot, and two tenants broadcasting at once both progress."""

from __future__ import annotations

import time

import pytest

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
    """A broadcast push of each of two tenants, the share on with a window of 2, and what reaches the broker
    recorded: (push A, push B, queued [(push id, ids)])."""
    if share._redis_client() is None:
        pytest.skip("the broadcast share needs the Redis cache")
    settings.BROADCAST_SHARE, settings.BROADCAST_WINDOW = True, 2
    other_app = services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    pushes = (make_push(make_template(app, "formid")), make_push(make_template(other_app, "formid")))
    queued: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        queue, "enqueue", lambda task, push_id, ids, countdown=None: queued.append((push_id, ids))
    )
    return (*pushes, queued)


@pytest.mark.django_db
def test_a_second_tenants_chunks_are_queued_while_the_first_tenants_wait_parked(two_tenants_broadcasting):
    a, b, queued = two_tenants_broadcasting
    for n in (1, 2, 3, 4):
        queue.enqueue_chunk(a.pk, [n])
    queue.enqueue_chunk(b.pk, [11])

    # A's window (2) is full: its 3rd and 4th chunks wait parked, their rows untouched; B's goes at once.
    assert queued == [(str(a.pk), [1]), (str(a.pk), [2]), (str(b.pk), [11])]
    queue.chunk_finished(a.pk, [1])  # one of A's chunks ends: the next one takes its place
    assert queued[3:] == [(str(a.pk), [3])]
    queue.chunk_finished(b.pk, [11])  # B's end gives A nothing
    assert queued[4:] == []


@pytest.mark.django_db
def test_a_lease_of_a_crashed_worker_expires_and_its_tenants_parked_chunk_is_queued_again(
    two_tenants_broadcasting, settings
):
    a, b, queued = two_tenants_broadcasting
    settings.BROADCAST_SHARE_LEASE = 0.5
    for n in (1, 2, 3):
        queue.enqueue_chunk(a.pk, [n])
    assert queued == [(str(a.pk), [1]), (str(a.pk), [2])]
    # Chunks 1 and 2 die with a SIGKILLed worker: nothing gives their places back.
    assert tasks.run_scheduled_pushes(3600)["unparked"] == 0  # beat: the leases still count
    time.sleep(0.6)
    assert tasks.run_scheduled_pushes(3600)["unparked"] == 1  # expired: the parked chunk goes
    assert queued[2:] == [(str(a.pk), [3])]


@pytest.mark.django_db
def test_transactional_sends_and_chunks_without_the_share_are_never_parked(
    two_tenants_broadcasting, settings
):
    a, b, queued = two_tenants_broadcasting
    listed = make_push(a.template, to=["oListed000000000000000000001"])
    for n in (1, 2, 3):
        queue.enqueue_chunk(listed.pk, [n])  # the sends lane
    settings.BROADCAST_SHARE = False
    for n in (4, 5, 6):
        queue.enqueue_chunk(a.pk, [n])
    assert [ids for _, ids in queued] == [[1], [2], [3], [4], [5], [6]]


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


def test_two_tenants_broadcasting_on_a_real_worker_take_turns(
    app,
    other_tenant,
    broker,  # noqa: F811 — the fixtures of test_worker.py
    start_worker,  # noqa: F811
    settings,
):
    """A's broadcast is enumerated first (its 20 chunks queued, or parked beyond its window); B's, queued right
    after, is done before A's, and both reach every user exactly once."""
    if share._redis_client() is None or broker.kind == "filesystem":
        pytest.skip(
            "the broadcast share needs the Redis cache; the pipeline queues through the configured broker"
        )
    window = {"BROADCAST_WINDOW": "2", "PUSH_CHUNK_SIZE": "25"}
    settings.BROADCAST_SHARE, settings.BROADCAST_WINDOW, settings.PUSH_CHUNK_SIZE = True, 2, 25
    for name in ("SEND_QUEUE", "BROADCAST_QUEUE", "MAINTENANCE_QUEUE"):
        setattr(settings, name, broker.queue)
    a_users = seed_users(app, 500, formids=1)
    other_app = services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    b_users = seed_users(other_app, 100, formids=1)
    a, b = make_push(make_template(app, "formid")), make_push(make_template(other_app, "formid"))
    assert tasks.deliver_push(str(a.pk)) == "started"  # enumerated here: A's chunks are ahead of B
    broker.send(tasks.deliver_push, str(b.pk))
    start_worker("threads", **window)

    wait_for(lambda: Push.objects.filter(pk__in=[a.pk, b.pk], status="done").count() == 2, 60, "both pushes")
    a.refresh_from_db()
    b.refresh_from_db()
    assert b.finished_at < a.finished_at, (a.finished_at, b.finished_at)
    assert inbox_counts(app.appid) == {openid: 1 for openid in a_users}
    assert inbox_counts(other_app.appid) == {openid: 1 for openid in b_users}
    assert (a.sent, b.sent, a.pending, b.pending) == (500, 100, 0, 0)
