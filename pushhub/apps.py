"""App configs of the project package itself."""

from __future__ import annotations

from django.contrib.staticfiles.apps import StaticFilesConfig as DjangoStaticFilesConfig


class StaticFilesConfig(DjangoStaticFilesConfig):
    """django.contrib.staticfiles, minus what npm leaves in static/: the SDK's package build
    (static/sdk/miniprogram_dist, made by `npm pack` from static/sdk/pushhub.js and pushhub-form/, which are
    served as they are), an installed node_modules, and packed tarballs."""

    ignore_patterns = [*DjangoStaticFilesConfig.ignore_patterns, "miniprogram_dist", "node_modules", "*.tgz"]
