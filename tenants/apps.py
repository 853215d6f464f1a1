from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and mini-programs"

    def ready(self):
        from tenants import schema  # noqa: F401  (registers the OpenAPI auth extension)
