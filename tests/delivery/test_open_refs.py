"""Each sent message's page carries the open ref of its delivery (``ph=<ref>``, ../shared/API.md "Opens and the
in-app inbox"): checked on what the sandbox's WeChat received."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from pushhub.wechat.sandbox import services as sandbox
from templates_app import tasks
from templates_app.catalogue import MAX_PAGE
from templates_app.models import Delivery
from templates_app.opens_ref import parse_ref

from .helpers import make_push, seed_users

pytestmark = pytest.mark.django_db(transaction=True)


def _send(template, openids, task_queue, page=None):
    if page is not None:  # the push takes the template's page (as a send without "page" does)
        template.page = page
        template.save(update_fields=["page"])
    push = make_push(template, openids)
    tasks.deliver_push(str(push.pk))
    task_queue.run()
    return push


def _received_pages(app, openids) -> dict[str, str]:
    pages = {}
    for openid in openids:
        [message] = sandbox.inbox(app.appid, openid)
        pages[openid] = message.page
    return pages


@pytest.mark.parametrize("kind", ["formid", "subscribe"])
def test_each_message_page_names_its_own_delivery_and_keeps_the_query(app, kind, task_queue):
    from .helpers import make_template

    template = make_template(app, kind)
    openids = seed_users(app, 3, formids=1) if kind == "formid" else seed_users(app, 3, subscribe=template)
    push = _send(template, openids, task_queue)

    deliveries = dict(Delivery.objects.filter(push=push, status="sent").values_list("openid", "pk"))
    assert len(deliveries) == 3
    for openid, page in _received_pages(app, openids).items():
        url = urlsplit(page)
        assert url.path == "pages/order"
        query = parse_qs(url.query)
        assert query["id"] == ["1"]  # the page's own query is kept, ph comes after it
        assert page.startswith("pages/order?id=1&ph=")
        [ref] = query["ph"]
        assert len(ref) <= 16
        assert parse_ref(ref) == deliveries[openid]


def test_a_page_without_a_query_gets_one(app, formid_template, task_queue):
    [alice] = seed_users(app, 1, formids=1)
    push = _send(formid_template, [alice], task_queue, page="pages/index")

    [page] = _received_pages(app, [alice]).values()
    row = Delivery.objects.get(push=push)
    assert page.startswith("pages/index?ph=")
    assert parse_ref(page.split("?ph=")[1]) == row.pk


def test_no_ref_when_the_template_does_not_track_opens(app, formid_template, task_queue):
    formid_template.track_opens = False
    formid_template.save(update_fields=["track_opens"])
    [alice] = seed_users(app, 1, formids=1)
    _send(formid_template, [alice], task_queue)

    assert _received_pages(app, [alice]) == {alice: "pages/order?id=1"}


def test_no_page_means_no_page_and_no_ref(app, formid_template, task_queue):
    [alice] = seed_users(app, 1, formids=1)
    _send(formid_template, [alice], task_queue, page="")

    assert _received_pages(app, [alice]) == {alice: ""}


def test_a_page_near_the_length_limit_is_sent_unchanged(app, formid_template, task_queue):
    long_page = "pages/order?q=" + "x" * (MAX_PAGE - len("pages/order?q=") - 5)
    assert len(long_page) == MAX_PAGE - 5
    [alice] = seed_users(app, 1, formids=1)
    push = _send(formid_template, [alice], task_queue, page=long_page)

    assert _received_pages(app, [alice]) == {alice: long_page}
    assert Delivery.objects.get(push=push).status == "sent"
