"""Drop the foreign keys' own indexes that another index of their table leads with, as
formids/migrations/0006_fk_indexes_led_by_others.py explains."""

import django.db.models.deletion
from django.db import migrations, models

from pushhub.migration_ops import drop_index


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY on PostgreSQL

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
                drop_index("tenants_membership_tenant_id_55f75d05", "tenants_membership", "tenant_id"),
            ],
        ),
    ]
