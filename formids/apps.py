from django.apps import AppConfig


class FormidsConfig(AppConfig):
    name = "formids"
    verbose_name = "Credit pools"

    def ready(self):
        from formids import live_apps, sdk_auth  # noqa: F401  (sdk_auth: the OpenAPI "Session" auth extension)

        live_apps.connect()  # a MiniProgram saved or deleted in this process empties its cache of live apps
