"""pushhub.sql.CompiledSelect: a queryset compiled once per connection gives what iterating the queryset gives
(every column converted, select_related objects cached), for each new parameter, on each thread's own
connection; and the look-ups built on it (trigger tokens, load_push) answer as before. pushhub.sql.insert_new:
one INSERT that stores what save() would."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pushhub.sql import CompiledSelect, insert_new
from templates_app import catalogue
from templates_app.delivery import ledger
from templates_app.models import Push, Template

FIELDS = [{"key": "thing1", "name": "商品名称"}, {"key": "time2", "name": "下单时间"}]

BY_TITLE = CompiledSelect(lambda title: Template.objects.select_related("app").filter(title=title)[:5])


def add(app, template_id: str, title: str) -> Template:
    return catalogue.create_template(
        app, kind="subscribe", template_id=template_id, title=title, fields=FIELDS, actor="t"
    )


def columns(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


@pytest.mark.django_db
def test_it_gives_what_the_queryset_gives_for_each_parameter(sandbox_app):
    first = add(sandbox_app, "T_ONE", "发货通知")
    add(sandbox_app, "T_TWO", "退款通知")

    for title in ["发货通知", "退款通知", "发货通知"]:
        expected = list(Template.objects.select_related("app").filter(title=title)[:5])
        found = BY_TITLE.fetch(title)
        assert [columns(t) for t in found] == [columns(t) for t in expected]
        assert [columns(t.app) for t in found] == [columns(t.app) for t in expected]
    assert BY_TITLE.fetch("no such title") == []

    (template,) = BY_TITLE.fetch("发货通知")
    assert template.pk == first.pk
    assert template.fields == FIELDS  # the JSON column decoded, not its text
    assert template.created_at.tzinfo is not None  # an aware UTC datetime, as the ORM gives
    assert template._state.adding is False and template._state.db == "default"
    with CaptureQueriesContext(connection) as queries:
        assert template.app.appid == sandbox_app.appid  # cached by the select_related part: no query
        template.title = "已改"
        template.save(update_fields=["title"])  # an instance the ORM can save as its own
    assert len(queries) == 1
    assert Template.objects.get(pk=first.pk).title == "已改"


@pytest.mark.django_db
def test_after_the_first_call_each_fetch_is_one_statement_without_the_orm_compiling_it(
    sandbox_app, monkeypatch
):
    add(sandbox_app, "T_ONE", "发货通知")
    BY_TITLE.fetch("发货通知")

    from django.db.models.sql import compiler

    def refuse(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(compiler.SQLCompiler, "as_sql", refuse)
    with CaptureQueriesContext(connection) as queries:
        assert len(BY_TITLE.fetch("发货通知")) == 1
    assert len(queries) == 1


@pytest.mark.django_db(transaction=True)
def test_each_thread_uses_its_own_connection(sandbox_app):
    add(sandbox_app, "T_ONE", "发货通知")
    assert len(BY_TITLE.fetch("发货通知")) == 1
    main_wrapper = connections["default"]
    seen = {}

    def other_thread():
        try:
            seen["titles"] = [t.title for t in BY_TITLE.fetch("发货通知")]
            own = connections["default"]
            seen["own wrapper"] = own is not main_wrapper and BY_TITLE in own.pushhub_compiled_selects
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen == {"titles": ["发货通知"], "own wrapper": True}


def test_it_refuses_what_it_cannot_reuse():
    from django.db.models import Count

    with pytest.raises(TypeError, match="plain model queryset"):
        CompiledSelect(lambda title: Template.objects.filter(title=title).values("id"))._compile(
            connection, ("x",)
        )
    with pytest.raises(TypeError, match="plain model queryset"):
        CompiledSelect(lambda title: Template.objects.annotate(n=Count("id")).filter(title=title))._compile(
            connection, ("x",)
        )
    # A filter whose bound value is not the parameter as given (here a parameter the SQL never binds).
    with pytest.raises(TypeError, match="binds"):
        CompiledSelect(lambda title: Template.objects.filter(title="fixed"))._compile(connection, ("x",))


@pytest.mark.django_db
def test_trigger_tokens_and_load_push_answer_through_it(sandbox_app):
    template = add(sandbox_app, "T_ONE", "发货通知")
    token = catalogue.new_trigger_token()
    catalogue.set_trigger_token(template, token)
    template.save()

    found = catalogue.template_for_trigger_token(token)
    assert found.pk == template.pk and found.app.pk == sandbox_app.pk
    assert catalogue.template_for_trigger_token(catalogue.new_trigger_token()) is None

    push = Push.objects.create(
        tenant=sandbox_app.tenant, app=sandbox_app, template=template, send_at=timezone.now()
    )
    for push_id in [push.pk, str(push.pk)]:
        loaded = ledger.load_push(push_id)
        assert loaded.pk == push.pk
        with CaptureQueriesContext(connection) as queries:
            assert loaded.template.title == "发货通知" and loaded.app.appid == sandbox_app.appid
        assert len(queries) == 0
    assert ledger.load_push(uuid.uuid4()) is None


@pytest.mark.django_db
def test_insert_new_stores_what_save_would(sandbox_app):
    template = add(sandbox_app, "T_ONE", "发货通知")
    push = Push(
        tenant_id=sandbox_app.tenant_id,
        app=sandbox_app,
        template=template,
        to=["oA", "oB"],
        data={"thing1": {"value": "订单 #1"}},
        hold_seconds=3600,
        recipients=2,
    )
    with CaptureQueriesContext(connection) as queries:
        insert_new(push)
    assert len(queries) == 1 and queries[0]["sql"].startswith("INSERT")
    assert push._state.adding is False
    assert (
        push.created_at is not None and push.created_at.tzinfo is not None
    )  # auto_now_add, as save() sets it

    stored = Push.objects.get(pk=push.pk)
    assert columns(stored) == columns(push)
    assert stored.to == ["oA", "oB"] and stored.data == {"thing1": {"value": "订单 #1"}}
    assert stored.send_at is None and stored.status == Push.Status.QUEUED  # the fields' defaults

    push.status = Push.Status.DONE
    push.save(update_fields=["status"])  # an UPDATE of the row, not a second INSERT
    assert Push.objects.filter(template=template).count() == 1
    assert Push.objects.get(pk=push.pk).status == Push.Status.DONE


@pytest.mark.django_db
def test_insert_new_is_save_when_something_listens(sandbox_app):
    from django.db.models.signals import post_save

    template = add(sandbox_app, "T_ONE", "发货通知")
    heard = []

    def listener(sender, instance, created, **kwargs):
        heard.append((instance.pk, created))

    post_save.connect(listener, sender=Push)
    try:
        push = Push(tenant_id=sandbox_app.tenant_id, app=sandbox_app, template=template)
        insert_new(push)
    finally:
        post_save.disconnect(listener, sender=Push)
    assert heard == [(push.pk, True)]
    assert Push.objects.filter(pk=push.pk).exists()
