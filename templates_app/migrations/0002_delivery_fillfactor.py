"""Leave room on each page of the delivery table so that marking an attempt (attempts, updated_at: no
indexed column) is a HOT update: no new entries in the table's five indexes for every send. PostgreSQL only."""

from django.db import migrations


def set_fillfactor(apps, schema_editor, value: int = 70) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE templates_app_delivery SET (fillfactor = {int(value)})")


def reset_fillfactor(apps, schema_editor) -> None:
    set_fillfactor(apps, schema_editor, 100)


class Migration(migrations.Migration):
    dependencies = [("templates_app", "0001_initial")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
