"""The statistics rows get a shard (formids.models.DailyStat.shard): 0 for every row there is. Backwards,
0008_stat_shards_merge has added each day's rows up into shard 0 first, so the old unique keys hold again.

The unique keys change: processes still running the code before this migration name the old key in their
upserts (ON CONFLICT (app_id, day)) and fail until they are restarted."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("formids", "0006_fk_indexes_led_by_others"),
        ("tenants", "0004_fk_indexes_led_by_others"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="dailystat",
            name="dailystat_unique_day",
        ),
        migrations.RemoveConstraint(
            model_name="templatedailystat",
            name="templatedailystat_unique_day",
        ),
        migrations.AddField(
            model_name="dailystat",
            name="shard",
            field=models.PositiveSmallIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="templatedailystat",
            name="shard",
            field=models.PositiveSmallIntegerField(db_default=0, default=0),
        ),
        migrations.AddConstraint(
            model_name="dailystat",
            constraint=models.UniqueConstraint(fields=("app", "day", "shard"), name="dailystat_unique_day"),
        ),
        migrations.AddConstraint(
            model_name="templatedailystat",
            constraint=models.UniqueConstraint(
                fields=("app", "template_id", "day", "shard"), name="templatedailystat_unique_day"
            ),
        ),
    ]
