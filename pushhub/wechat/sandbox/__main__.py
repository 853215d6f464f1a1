"""``python -m pushhub.wechat.sandbox --port 9100 [--host 127.0.0.1] [--threads 16]``: the sandbox alone."""

from __future__ import annotations

import argparse
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pushhub.wechat.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--threads", type=int, default=16, help="worker threads (and DB connections)")
    parser.add_argument("--no-migrate", action="store_true", help="do not migrate the sandbox's tables first")
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushhub.settings")
    import django

    django.setup()
    from .server import serve

    serve(args.host, args.port, args.threads, migrate=not args.no_migrate, access_log=args.access_log)


if __name__ == "__main__":
    main()
