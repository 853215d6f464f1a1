from django.apps import AppConfig


class FormidsConfig(AppConfig):
    name = "formids"
    verbose_name = "Credit pools"
