"""collectstatic leaves out what npm produces in static/ (the SDK's package build, node_modules, tarballs)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from django.core.management import call_command
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent


def test_collectstatic_skips_npm_output(tmp_path):
    source = tmp_path / "static"
    for name in (
        "sdk/pushhub.js",
        "sdk/pushhub.d.ts",
        "sdk/package.json",
        "sdk/pushhub-form/index.js",
        "sdk/miniprogram_dist/index.js",
        "sdk/miniprogram_dist/pushhub-form/index.js",
        "sdk/node_modules/left-pad/index.js",
        "sdk/pushhub-miniprogram-sdk-1.0.0.tgz",
    ):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("x")
    target = tmp_path / "collected"
    with override_settings(STATICFILES_DIRS=[source], STATIC_ROOT=target):
        call_command("collectstatic", "--noinput", verbosity=0, stdout=StringIO())
    collected = {p.relative_to(target).as_posix() for p in (target / "sdk").rglob("*") if p.is_file()}
    assert collected == {
        "sdk/pushhub.js",
        "sdk/pushhub.d.ts",
        "sdk/package.json",
        "sdk/pushhub-form/index.js",
    }


def test_the_sdk_is_still_served_from_static():
    """The repository's own static/sdk: what a developer copies, and what /static/sdk/ serves."""
    from django.contrib.staticfiles import finders

    for name in ("sdk/pushhub.js", "sdk/pushhub-form/index.wxml", "sdk/pushhub.d.ts", "sdk/README.md"):
        assert finders.find(name) == str(ROOT / "static" / name)
