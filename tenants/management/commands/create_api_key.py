from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.models import ApiKey, Tenant


class Command(BaseCommand):
    help = (
        "Create an API key for a tenant and print only the key (it is not stored and cannot be shown again)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--scope", choices=ApiKey.Scope.values, default=ApiKey.Scope.READ)
        parser.add_argument("--name", default="")

    def handle(self, tenant, scope, name, **options):
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        _, raw = services.create_api_key(found, scope, name=name, actor="system:create_api_key")
        self.stdout.write(raw)
