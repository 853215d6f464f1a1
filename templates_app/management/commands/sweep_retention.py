"""Delete (``--dry-run``: count) the rows past their *_RETENTION_DAYS now, as the beat's sweep does, and
print what went per table. It lives in templates_app because it touches every app's tables (dependencies
point templates_app → formids, webhooks, tenants)."""

from django.core.management.base import BaseCommand, CommandError

from templates_app import retention


class Command(BaseCommand):
    help = "Delete the rows past their *_RETENTION_DAYS in short batches; --dry-run counts them instead."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
        parser.add_argument("--batch-size", type=int, default=None, help="rows per transaction at most")
        parser.add_argument("--budget", type=float, default=None, help="seconds the run may take")

    def handle(self, *args, dry_run=False, batch_size=None, budget=None, **options):
        try:
            reports = retention.sweep(dry_run=dry_run, batch_size=batch_size, budget=budget)
        except retention.SweepRunning as exc:
            raise CommandError(f"{exc}; try again when it is done") from exc
        for report in reports:
            self.stdout.write(report.line(dry_run=dry_run))
