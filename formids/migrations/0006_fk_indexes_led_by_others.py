"""Drop the single-column indexes Django gives a foreign key where another index of the table already leads
with that column (a unique constraint or a composite index): one index fewer to write per row, and no index
for the planner to pick instead of the composite one when statistics lag behind a table's growth.

Only the indexes go (the model state says ``db_index=False``): the foreign-key constraints stay as they are,
not dropped and re-added, so the upgrade validates no rows; on PostgreSQL the indexes are dropped (and made)
concurrently, so sends and uploads go on meanwhile."""

import django.db.models.deletion
from django.db import migrations, models

from pushhub.migration_ops import drop_index


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY on PostgreSQL

    dependencies = [
        ("formids", "0005_recent_opens"),
        ("tenants", "0004_fk_indexes_led_by_others"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="dailystat",
                    name="app",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="daily_stats",
                        to="tenants.miniprogram",
                    ),
                ),
                migrations.AlterField(
                    model_name="miniuser",
                    name="app",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="users",
                        to="tenants.miniprogram",
                    ),
                ),
            ],
            database_operations=[
                drop_index("formids_dailystat_app_id_d958b7d6", "formids_dailystat", "app_id"),
                drop_index("formids_miniuser_app_id_da101d0b", "formids_miniuser", "app_id"),
            ],
        ),
    ]
