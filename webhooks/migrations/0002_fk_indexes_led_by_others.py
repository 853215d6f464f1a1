"""Drop the foreign keys' own indexes that another index of their table leads with, as
formids/migrations/0006_fk_indexes_led_by_others.py explains."""

import django.db.models.deletion
from django.db import migrations, models

from pushhub.migration_ops import drop_index


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY on PostgreSQL

    dependencies = [
        ("webhooks", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="eventdispatch",
                    name="event",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="dispatches",
                        to="webhooks.webhookevent",
                    ),
                ),
                migrations.AlterField(
                    model_name="webhookattempt",
                    name="endpoint",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="webhooks.webhookendpoint",
                    ),
                ),
            ],
            database_operations=[
                drop_index("webhooks_eventdispatch_event_id_ca5fa3f2", "webhooks_eventdispatch", "event_id"),
                # PostgreSQL's second index of a text foreign key (for LIKE, which nothing asks).
                drop_index(
                    "webhooks_eventdispatch_event_id_ca5fa3f2_like",
                    "webhooks_eventdispatch",
                    "event_id",
                    remake=False,
                ),
                drop_index("webhooks_webhookattempt_endpoint_id_53f93a93", "webhooks_webhookattempt", "endpoint_id"),
            ],
        ),
    ]
