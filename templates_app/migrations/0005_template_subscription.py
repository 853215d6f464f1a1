# Template.subscription: one_time | long_term for subscribe templates (WeChat's type 2 / 3), "" for formId
# templates. Every subscribe template so far was one-time (sync did not read the type yet).

from django.db import migrations, models


def subscribe_templates_are_one_time(apps, schema_editor):
    Template = apps.get_model("templates_app", "Template")
    Template.objects.filter(kind="subscribe", subscription="").update(subscription="one_time")


class Migration(migrations.Migration):

    dependencies = [
        ('templates_app', '0004_push_hold'),
    ]

    operations = [
        migrations.AddField(
            model_name='template',
            name='subscription',
            field=models.CharField(blank=True, choices=[('one_time', 'one-time'), ('long_term', 'long-term')], default='', max_length=10),
        ),
        migrations.RunPython(subscribe_templates_are_one_time, migrations.RunPython.noop),
    ]
