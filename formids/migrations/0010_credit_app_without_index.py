"""Drop the credit → app column's own index (Credit.app's comment says why): CONCURRENTLY on PostgreSQL, so
uploads and sends go on meanwhile. Backwards, it is made again."""

import django.db.models.deletion
from django.db import migrations, models

from pushhub.migration_ops import drop_index


class Migration(migrations.Migration):
    atomic = False  # DROP/CREATE INDEX CONCURRENTLY on PostgreSQL

    dependencies = [
        ("formids", "0009_credit_app_without_constraint"),
        ("tenants", "0004_fk_indexes_led_by_others"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="credit",
                    name="app",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="credits",
                        to="tenants.miniprogram",
                    ),
                ),
            ],
            database_operations=[drop_index("formids_credit_app_id_c6b70502", "formids_credit", "app_id")],
        ),
    ]
