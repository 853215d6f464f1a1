"""Aliases bound concurrently (real transactions in threads): the latest binding wins, nothing fails, no
deadlock. On PostgreSQL the second binding of one alias meets the unique index and tries again; a swap of
two users' aliases would deadlock without formids.audience's lock order. On SQLite writers queue."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from formids import audience
from formids.models import MiniUser
from formids.services import touch_user

pytestmark = pytest.mark.django_db(transaction=True)


def run_together(*calls) -> list[Exception]:
    errors: list[Exception] = []

    def run(call):
        try:
            call()
        except Exception as exc:  # asserted by the caller
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def aliases(app) -> dict[str, str | None]:
    return dict(MiniUser.objects.filter(app=app).values_list("openid", "alias"))


def test_the_binding_that_commits_last_wins(sandbox_app):
    alice, bob = touch_user(sandbox_app, "oRaceAlice"), touch_user(sandbox_app, "oRaceBob")
    bound = threading.Event()

    def alice_binds_and_holds_her_transaction():
        with transaction.atomic():
            audience.set_user_audience(MiniUser.objects.get(pk=alice.pk), alias="shared")
            bound.set()
            time.sleep(0.5)  # bob's binding runs meanwhile: on PostgreSQL it waits on the unique index

    def bob_binds_while_alice_holds_it():
        bound.wait(timeout=10)
        audience.set_user_audience(MiniUser.objects.get(pk=bob.pk), alias="shared")

    assert run_together(alice_binds_and_holds_her_transaction, bob_binds_while_alice_holds_it) == []
    assert aliases(sandbox_app) == {"oRaceAlice": None, "oRaceBob": "shared"}


def test_two_users_swapping_aliases_at_once_do_not_deadlock(sandbox_app, monkeypatch):
    alice, bob = touch_user(sandbox_app, "oSwapAlice"), touch_user(sandbox_app, "oSwapBob")
    audience.set_user_audience(alice, alias="Y")
    audience.set_user_audience(bob, alias="X")
    bind = audience._bind_alias

    def slow_bind(user, alias):
        time.sleep(0.3)  # both calls have taken their row locks by now
        return bind(user, alias)

    monkeypatch.setattr(audience, "_bind_alias", slow_bind)
    errors = run_together(
        lambda: audience.set_user_audience(MiniUser.objects.get(pk=alice.pk), alias="X"),
        lambda: audience.set_user_audience(MiniUser.objects.get(pk=bob.pk), alias="Y"),
    )
    assert errors == []
    assert aliases(sandbox_app) == {"oSwapAlice": "X", "oSwapBob": "Y"}
