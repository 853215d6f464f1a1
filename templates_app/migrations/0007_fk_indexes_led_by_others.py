"""Drop the foreign keys' own indexes that another index of their table leads with, as
formids/migrations/0006_fk_indexes_led_by_others.py explains. Delivery.msgid's index becomes partial (IS NOT NULL)."""

import django.db.models.deletion
from django.db import migrations, models

from pushhub.migration_ops import create_index, drop_index


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY on PostgreSQL

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
                drop_index("templates_app_delivery_push_id_ea1e60e8", "templates_app_delivery", "push_id"),
                drop_index("templates_app_idempotencyrecord_template_id_767c15cd", "templates_app_idempotencyrecord", "template_id"),
                drop_index("templates_app_push_tenant_id_8be9288a", "templates_app_push", "tenant_id"),
            ],
        ),
        # The MsgID index, partial: made before the full one goes, so a lookup always has one.
        migrations.SeparateDatabaseAndState(
            state_operations=[
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
            ],
            database_operations=[
                create_index("delivery_msgid", "templates_app_delivery", "msgid", where='"msgid" IS NOT NULL'),
                drop_index("templates_app_delivery_msgid_0811b863", "templates_app_delivery", "msgid"),
            ],
        ),
    ]
