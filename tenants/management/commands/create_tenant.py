from django.core.management.base import BaseCommand, CommandError

from tenants import services


class Command(BaseCommand):
    help = "Create a tenant and its owner (an existing user with that e-mail becomes the owner)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--owner", required=True, help="owner's e-mail (also the login name)")
        parser.add_argument("--password", help="owner's password; generated and printed if omitted")
        parser.add_argument("--slug", help="tenant slug; derived from the name if omitted")

    def handle(self, name, owner, password=None, slug=None, **options):
        try:
            created = services.create_tenant(name, owner, password=password, slug=slug)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"tenant: {created.tenant.slug}")
        self.stdout.write(f"owner: {owner}")
        if created.password:
            self.stdout.write(f"password: {created.password}")
