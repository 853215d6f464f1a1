"""A one-user push's prepared statements (``pushhub.sql.prepared_cursor``) are planned once per connection:
PostgreSQL keeps their generic plan instead of planning the ones given an array again at every run (it did:
a plan for one id always looked cheaper than the generic plan, costed for ten). Straight to PostgreSQL only
(DATABASE_POOL_MODE=session): behind a pooler in transaction mode nothing is prepared."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

from templates_app import tasks
from templates_app.models import Delivery

from .helpers import make_push, seed_users

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql' or settings.DATABASE_POOL_MODE != 'session'",
        reason="prepared statements: PostgreSQL, session mode",
    ),
]


def replanned_statements() -> list[tuple[int, int, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans, left(statement, 120) FROM pg_prepared_statements "
            "WHERE custom_plans > 0"
        )
        return cursor.fetchall()


def test_one_user_pushes_plan_each_prepared_statement_once(app, formid_template, task_queue):
    assert settings.DATABASE_POOL_MODE == "session"
    users = seed_users(app, 8, formids=1)
    for user in users:  # more than the five custom plans PostgreSQL tries before it may keep the generic one
        push = make_push(formid_template, [user])
        tasks.deliver_push(str(push.pk))
        task_queue.run()
    sent = Delivery.objects.filter(push__template=formid_template, status=Delivery.Status.SENT)
    assert sent.count() == len(users)
    assert replanned_statements() == []
