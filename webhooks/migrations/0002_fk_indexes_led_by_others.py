"""Drop the single-column indexes Django gives a foreign key where another index of the table already leads
with that column (a unique constraint or a composite index): one index fewer to write per row, and no index
for the planner to pick instead of the composite one when statistics lag behind a table's growth.

Only the indexes go (the model state says ``db_index=False``): the foreign-key constraints stay as they are,
not dropped and re-added, so the upgrade validates no rows and holds no lock beyond the index's own drop."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
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
                migrations.RunSQL(
                    [
                        'DROP INDEX IF EXISTS "webhooks_eventdispatch_event_id_ca5fa3f2"',
                        # PostgreSQL's second index of a text foreign key (for LIKE, which nothing asks).
                        'DROP INDEX IF EXISTS "webhooks_eventdispatch_event_id_ca5fa3f2_like"',
                    ],
                    'CREATE INDEX IF NOT EXISTS "webhooks_eventdispatch_event_id_ca5fa3f2" ON "webhooks_eventdispatch" ("event_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "webhooks_webhookattempt_endpoint_id_53f93a93"',
                    'CREATE INDEX IF NOT EXISTS "webhooks_webhookattempt_endpoint_id_53f93a93" ON "webhooks_webhookattempt" ("endpoint_id")',
                ),
            ],
        ),
    ]
