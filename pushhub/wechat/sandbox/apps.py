from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """The WeChat sandbox; label ``sandbox`` keeps table names short (``sandbox_sandboxapp`` …)."""

    name = "pushhub.wechat.sandbox"
    label = "sandbox"
    verbose_name = "WeChat sandbox"
    default_auto_field = "django.db.models.BigAutoField"
