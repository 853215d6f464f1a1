# Long-term subscriptions (WeChat's template type 3): Credit kind "long_term", one standing row per user and
# template (a partial unique index, also what a long-term claim probes). formId/prepay_id values stay unique
# per app; the condition now names those kinds, so long-term rows (value "") are outside it as subscribe
# credits always were. The new index is built before the old one is dropped: uniqueness never lapses.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('formids', '0002_audience'),
        ('tenants', '0002_identity_secret'),
    ]

    operations = [
        migrations.AlterField(
            model_name='credit',
            name='kind',
            field=models.CharField(choices=[('formid', 'formId'), ('prepay', 'prepay_id'), ('subscribe', 'subscribe'), ('long_term', 'long-term subscription')], max_length=10),
        ),
        migrations.AddConstraint(
            model_name='credit',
            constraint=models.UniqueConstraint(condition=models.Q(('kind__in', ['formid', 'prepay'])), fields=('app', 'value'), name='credit_unique_formid_value'),
        ),
        migrations.RemoveConstraint(
            model_name='credit',
            name='credit_unique_value',
        ),
        migrations.AddConstraint(
            model_name='credit',
            constraint=models.UniqueConstraint(condition=models.Q(('kind', 'long_term'), ('state', 'available')), fields=('user', 'template_id'), name='credit_unique_long_term'),
        ),
    ]
