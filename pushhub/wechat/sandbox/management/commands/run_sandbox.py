"""``manage.py run_sandbox --port 9100``: the WeChat sandbox alone, on the project's database."""

from django.core.management.base import BaseCommand, CommandParser

from pushhub.wechat.sandbox.server import serve


class Command(BaseCommand):
    help = "Serve the WeChat sandbox alone (WeChat paths at the root, _control/ beside them)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100)
        parser.add_argument("--threads", type=int, default=16, help="worker threads (and DB connections)")
        parser.add_argument(
            "--no-migrate", action="store_true", help="do not migrate the sandbox's tables first"
        )
        parser.add_argument("--access-log", action="store_true", help="log every request to stderr")

    def handle(self, *args, **options) -> None:
        serve(
            options["host"],
            options["port"],
            options["threads"],
            migrate=not options["no_migrate"],
            access_log=options["access_log"],
        )
