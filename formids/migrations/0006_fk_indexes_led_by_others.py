"""Drop the single-column indexes Django gives a foreign key where another index of the table already leads
with that column (a unique constraint or a composite index): one index fewer to write per row, and no index
for the planner to pick instead of the composite one when statistics lag behind a table's growth.

Only the indexes go (the model state says ``db_index=False``): the foreign-key constraints stay as they are,
not dropped and re-added, so the upgrade validates no rows and holds no lock beyond the index's own drop."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
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
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "formids_dailystat_app_id_d958b7d6"',
                    'CREATE INDEX IF NOT EXISTS "formids_dailystat_app_id_d958b7d6" ON "formids_dailystat" ("app_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "formids_miniuser_app_id_da101d0b"',
                    'CREATE INDEX IF NOT EXISTS "formids_miniuser_app_id_da101d0b" ON "formids_miniuser" ("app_id")',
                ),
            ],
        ),
    ]
