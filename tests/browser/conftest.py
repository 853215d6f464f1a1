"""Browser fixtures: headless Debian Chromium through Playwright, and deliveries run in the live server's
process (background threads standing in for a Celery worker)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

# No skip here (a skip raised while importing a conftest is an error): test_flow.py skips itself when
# playwright or Chromium is missing, and only its fixtures below import playwright.


@pytest.fixture(scope="session")
def browser():
    # Playwright's sync API keeps an event loop in this thread; Django refuses ORM calls from such a thread
    # unless told it is fine (the test calls the ORM only between browser steps, never concurrently).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", base_url=live_server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot():
    """screenshot(page, "name"): docs/screenshots/name.png, only when PUSHHUB_SCREENSHOTS=1."""
    enabled = os.environ.get("PUSHHUB_SCREENSHOTS") == "1"

    def take(page, name: str) -> None:
        if enabled:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)

    return take


class InlineWorker:
    """Runs each queued task in a thread of its own (after the enqueuing transaction commits), so the request
    that queued it answers first and the push page sees progress move. Countdowns are waited, capped."""

    MAX_COUNTDOWN = 0.5

    def __init__(self):
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.ran: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, task: str, *args, countdown: float | None = None) -> None:
        from django.db import transaction

        transaction.on_commit(lambda: self._start(task, args, countdown or 0))

    def _start(self, task: str, args: tuple, countdown: float) -> None:
        thread = threading.Thread(target=self._run, args=(task, args, countdown), daemon=True)
        with self._lock:
            self.threads.append(thread)
        thread.start()

    def _run(self, task: str, args: tuple, countdown: float) -> None:
        from django.db import connections

        from templates_app import tasks

        try:
            if countdown > 0:
                time.sleep(min(countdown, self.MAX_COUNTDOWN))
            getattr(tasks, task)(*args)
            with self._lock:
                self.ran.append(task)
        except BaseException as exc:  # reported by the fixture's teardown
            with self._lock:
                self.errors.append(exc)
        finally:
            connections.close_all()

    def join(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                alive = [t for t in self.threads if t.is_alive()]
            if not alive:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(alive)} delivery thread(s) still running")
            alive[0].join(0.1)


@pytest.fixture
def inline_worker(monkeypatch, settings):
    """Every task the delivery pipeline queues (templates_app.delivery.queue: a new push, its chunks,
    retries) runs here."""
    from templates_app.delivery import queue

    settings.DELIVERY_RETRY_BASE = 0.01
    settings.DELIVERY_RETRY_MAX = 0.05
    worker = InlineWorker()
    monkeypatch.setattr(queue, "enqueue", worker)
    yield worker
    worker.join()
    assert not worker.errors, worker.errors
