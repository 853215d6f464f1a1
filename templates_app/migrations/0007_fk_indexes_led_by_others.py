"""Drop the single-column indexes Django gives a foreign key where another index of the table already leads
with that column (a unique constraint or a composite index): one index fewer to write per row, and no index
for the planner to pick instead of the composite one when statistics lag behind a table's growth.

Only the indexes go (the model state says ``db_index=False``): the foreign-key constraints stay as they are,
not dropped and re-added, so the upgrade validates no rows and holds no lock beyond the index's own drop."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("formids", "0006_fk_indexes_led_by_others"),
        ("templates_app", "0006_opens_inbox_stats"),
        ("tenants", "0004_fk_indexes_led_by_others"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="push",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="templates_app.push",
                    ),
                ),
                migrations.AlterField(
                    model_name="idempotencyrecord",
                    name="template",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="idempotency_records",
                        to="templates_app.template",
                    ),
                ),
                migrations.AlterField(
                    model_name="push",
                    name="tenant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pushes",
                        to="tenants.tenant",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "templates_app_delivery_push_id_ea1e60e8"',
                    'CREATE INDEX IF NOT EXISTS "templates_app_delivery_push_id_ea1e60e8" ON "templates_app_delivery" ("push_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "templates_app_idempotencyrecord_template_id_767c15cd"',
                    'CREATE INDEX IF NOT EXISTS "templates_app_idempotencyrecord_template_id_767c15cd" ON "templates_app_idempotencyrecord" ("template_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "templates_app_push_tenant_id_8be9288a"',
                    'CREATE INDEX IF NOT EXISTS "templates_app_push_tenant_id_8be9288a" ON "templates_app_push" ("tenant_id")',
                ),
            ],
        ),
        migrations.AlterField(
            model_name="delivery",
            name="msgid",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("msgid__isnull", False)), fields=["msgid"], name="delivery_msgid"
            ),
        ),
    ]
