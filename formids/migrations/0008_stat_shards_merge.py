"""Backwards only: each day's statistics rows are added up into shard 0 and the other shards deleted, so that
0007_stat_shards can go back to one row per day with no count lost. In a migration of its own: its writes
commit before 0007's constraint changes (PostgreSQL refuses ALTER TABLE with foreign-key checks pending)."""

from django.db import migrations
from django.db.models import Sum

COUNTERS = {
    "dailystat": ("formids_collected", "subscribe_collected", "sent", "failed"),
    "templatedailystat": ("credits_collected", "sent", "failed", "opened", "resubscribed"),
}
KEYS = {"dailystat": ("app_id", "day"), "templatedailystat": ("app_id", "template_id", "day")}


def merge_into_shard_0(apps, schema_editor):
    for name, counters in COUNTERS.items():
        model = apps.get_model("formids", name)
        keys = KEYS[name]
        spread = model.objects.exclude(shard=0)
        for row in spread.order_by().values(*keys).annotate(**{c: Sum(c) for c in counters}):
            key = {k: row[k] for k in keys}
            target, _ = model.objects.get_or_create(**key, shard=0)
            for counter in counters:
                setattr(target, counter, getattr(target, counter) + (row[counter] or 0))
            target.save(update_fields=list(counters))
        spread.delete()


class Migration(migrations.Migration):
    dependencies = [("formids", "0007_stat_shards")]

    operations = [migrations.RunPython(migrations.RunPython.noop, merge_into_shard_0)]
