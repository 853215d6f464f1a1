"""Drop the single-column indexes Django gives a foreign key where another index of the table already leads
with that column (a unique constraint or a composite index): one index fewer to write per row, and no index
for the planner to pick instead of the composite one when statistics lag behind a table's growth.

Only the indexes go (the model state says ``db_index=False``): the foreign-key constraints stay as they are,
not dropped and re-added, so the upgrade validates no rows and holds no lock beyond the index's own drop."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0003_opens_inbox_stats"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="membership",
                    name="tenant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to="tenants.tenant",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "tenants_membership_tenant_id_55f75d05"',
                    'CREATE INDEX IF NOT EXISTS "tenants_membership_tenant_id_55f75d05" ON "tenants_membership" ("tenant_id")',
                ),
            ],
        ),
    ]
