from django.apps import AppConfig


class FormidsConfig(AppConfig):
    name = "formids"
    verbose_name = "Credit pools"

    def ready(self):
        from formids import sdk_auth  # noqa: F401  (registers the OpenAPI "Session" auth extension)
