"""An SDK upload locks nothing that every upload of the app shares (real transactions in threads).

A stored credit used to lock its app's row (the database's check of the credit → app foreign key: FOR KEY
SHARE at the commit, once a credit): every concurrent upload of one app took the same row lock, and an upload
waited behind anything holding that row. The constraint is gone (a credit's app is its user's, and the user's
own constraints prove it exists); Django still deletes an app's credits with it. (The day's first upload still
checks the app once, making the day's statistics rows; MiniUser's row is made once per user.)"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from formids import services
from formids.models import Credit
from tenants.models import MiniProgram

pytestmark = pytest.mark.django_db(transaction=True)

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")


@on_postgresql
def test_an_upload_does_not_wait_for_a_lock_on_its_apps_row(sandbox_app):
    user = services.touch_user(sandbox_app, "oLockedAppUser")
    # The day's first upload makes the day's statistics rows, whose own foreign key checks the app: later
    # uploads only add to them.
    services.take_uploaded_ids(sandbox_app, user.openid, formids=["lockfree0000000000000000"])
    locked, done = threading.Event(), threading.Event()

    def hold_the_apps_row():
        try:
            with transaction.atomic():
                MiniProgram.objects.select_for_update().filter(pk=sandbox_app.pk).values_list("pk").first()
                locked.set()
                done.wait(timeout=10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_apps_row)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        # In a transaction of its own, so that the timeout ends with it (and pgbouncer keeps no session state):
        # the old constraint's check ran at the commit, and failed it ("canceling statement due to lock
        # timeout … while locking tuple … in relation tenants_miniprogram").
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            intake = services.take_uploaded_ids(
                sandbox_app, user.openid, formids=["lockfree0000000000000001", "lockfree0000000000000002"]
            )
    finally:
        done.set()
        holder.join(timeout=10)
    assert (intake.accepted, intake.duplicates) == (2, 0)
    assert Credit.objects.filter(user=user, app=sandbox_app).count() == 3


def test_deleting_an_app_still_deletes_its_credits(sandbox_app):
    user = services.touch_user(sandbox_app, "oDeletedAppUser")
    services.take_uploaded_ids(sandbox_app, user.openid, formids=["gonewiththeapp00000000001"])
    assert Credit.objects.filter(app=sandbox_app).count() == 1
    MiniProgram.objects.filter(pk=sandbox_app.pk).delete()  # the row itself, not the dashboard's soft delete
    assert not Credit.objects.filter(app_id=sandbox_app.pk).exists()
