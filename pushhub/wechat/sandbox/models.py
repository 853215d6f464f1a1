"""The sandbox's state, in the project database so web, Celery workers and a standalone sandbox share it.

Rows are keyed by appid/openid strings like WeChat's own identifiers: nothing here points at PushHub's
tables, so the sandbox can be wiped or run against an empty database without touching the product's data.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

FORMID_LIFETIME = timedelta(days=7)
LOGIN_CODE_LIFETIME = timedelta(minutes=5)
# WeChat's msgids are large 64-bit numbers; ours are this base + the inbox row id (unique, increasing).
MSGID_BASE = 2_000_000_000_000_000_000


class SandboxApp(models.Model):
    """A fake mini-program: its credentials, its 消息推送配置 and the knobs that make the sandbox misbehave
    on purpose."""

    PLAINTEXT = "plaintext"
    SAFE = "safe"
    EVENTS_MODES = [(PLAINTEXT, "plaintext (明文模式)"), (SAFE, "safe (安全模式)")]
    JSON = "json"
    XML = "xml"
    EVENTS_FORMATS = [(JSON, "JSON"), (XML, "XML")]

    appid = models.CharField(max_length=64, unique=True)
    secret = models.CharField(max_length=128)
    # 消息推送配置: where WeChat pushes this app's events, signed with the Token and, in safe mode, encrypted
    # with the EncodingAESKey. No URL: nothing is pushed.
    events_url = models.CharField(max_length=500, blank=True, default="")
    events_token = models.CharField(max_length=32, blank=True, default="")
    events_aes_key = models.CharField(max_length=43, blank=True, default="")
    events_mode = models.CharField(max_length=10, choices=EVENTS_MODES, default=SAFE)
    events_format = models.CharField(max_length=4, choices=EVENTS_FORMATS, default=JSON)
    latency_ms = models.PositiveIntegerField(default=0)
    error_rate = models.FloatField(default=0.0)
    timeout_rate = models.FloatField(default=0.0)
    timeout_seconds = models.FloatField(default=15.0)
    token_ttl = models.PositiveIntegerField(default=7200)
    formid_retired = models.BooleanField(default=False)
    enforce_force_refresh_limits = models.BooleanField(default=True)
    # Push subscribe_msg_sent_event after each successful subscribe send (off by default: it makes every
    # send wait for the event push).
    push_sent_events = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    KNOBS = (
        "latency_ms",
        "error_rate",
        "timeout_rate",
        "timeout_seconds",
        "token_ttl",
        "formid_retired",
        "enforce_force_refresh_limits",
        "push_sent_events",
    )

    class Meta:
        verbose_name = "sandbox app"

    def __str__(self) -> str:
        return self.appid


class SandboxToken(models.Model):
    """An issued access_token. Kept after expiry so the sandbox can tell 42001 (expired) from 40001 (unknown)."""

    STABLE = "stable"
    PLAIN = "plain"
    FAMILIES = [(STABLE, "stable_token"), (PLAIN, "cgi-bin/token")]

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="tokens")
    token = models.CharField(max_length=512, unique=True)
    family = models.CharField(max_length=8, choices=FAMILIES)
    forced = models.BooleanField(default=False, help_text="Issued by stable_token with force_refresh.")
    issued_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    # From this moment the token answers 40001; may lie in the future (a replaced plain token's grace period).
    invalidated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["app", "family", "issued_at"], name="sandbox_token_family")]

    def __str__(self) -> str:
        return f"{self.app_id}:{self.family}:{self.token[:12]}…"


class SandboxUser(models.Model):
    """A WeChat user of one app (an openid is per app, a unionid spans an open-platform account)."""

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="users")
    openid = models.CharField(max_length=64)
    unionid = models.CharField(max_length=64, blank=True, default="")
    # CreateTime of the last event pushed about this user: the next one gets a later second (see
    # services._event_time).
    last_event_time = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "openid"], name="sandbox_user_unique")]

    def __str__(self) -> str:
        return self.openid


class SandboxLoginCode(models.Model):
    """What ``wx.login`` hands the mini-program: exchanged once, within 5 minutes, by jscode2session."""

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="login_codes")
    code = models.CharField(max_length=64, unique=True)
    openid = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.code[:8]}… → {self.openid}"


class SandboxFormId(models.Model):
    """A formId (1 send) or prepay_id (3 sends) the sandbox issued; valid 7 days, only for its openid."""

    FORMID = "formid"
    PREPAY = "prepay"
    KINDS = [(FORMID, "formId"), (PREPAY, "prepay_id")]
    USES = {FORMID: 1, PREPAY: 3}

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="formids")
    openid = models.CharField(max_length=64)
    value = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=8, choices=KINDS, default=FORMID)
    uses_left = models.PositiveSmallIntegerField()
    issued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "sandbox formId"

    def __str__(self) -> str:
        return f"{self.kind} {self.value} ({self.uses_left} left)"

    @property
    def expires_at(self):
        return self.issued_at + FORMID_LIFETIME


class SandboxSubscription(models.Model):
    """Sends a user allowed for one subscribe template: +1 per ``accept``, -1 per successful send. For a
    long-term template (type 3) ``credits`` is 1 while the user has it on (sends do not spend it), 0 off."""

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="subscriptions")
    openid = models.CharField(max_length=64)
    template_id = models.CharField(max_length=128)
    credits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "openid", "template_id"], name="sandbox_subscription_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.openid} × {self.template_id}: {self.credits}"


class SandboxTemplate(models.Model):
    """A template in the app's WeChat account: legacy formId (``template/list``) or subscribe (``gettemplate``)."""

    FORMID = "formid"
    SUBSCRIBE = "subscribe"
    KINDS = [(FORMID, "formId template"), (SUBSCRIBE, "subscribe template")]
    ONE_TIME, LONG_TERM = 2, 3  # WeChat's subscribe template type

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="templates")
    kind = models.CharField(max_length=10, choices=KINDS)
    template_id = models.CharField(max_length=128)
    title = models.CharField(max_length=100)
    content = models.TextField()
    example = models.TextField(blank=True, default="")
    type = models.PositiveSmallIntegerField(default=2, help_text="Subscribe: 2 one-time, 3 long-term.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "template_id"], name="sandbox_template_unique")]

    def __str__(self) -> str:
        return f"{self.title} ({self.template_id})"


class SandboxMessage(models.Model):
    """The inbox: every message WeChat accepted, as the user's phone would show it."""

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="messages")
    openid = models.CharField(max_length=64)
    kind = models.CharField(max_length=10, choices=SandboxTemplate.KINDS)
    template_id = models.CharField(max_length=128)
    title = models.CharField(max_length=100, blank=True, default="")
    data = models.JSONField(default=dict)
    page = models.CharField(max_length=1024, blank=True, default="")
    form_id = models.CharField(max_length=64, blank=True, default="")
    miniprogram_state = models.CharField(max_length=10, blank=True, default="")
    lang = models.CharField(max_length=5, blank=True, default="")
    emphasis_keyword = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["app", "openid", "id"], name="sandbox_message_inbox")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title} → {self.openid}"

    @property
    def msgid(self) -> int | None:
        """WeChat's msgid for a subscribe message (None for formId messages, which have none)."""
        return MSGID_BASE + self.pk if self.kind == SandboxTemplate.SUBSCRIBE and self.pk else None


class SandboxCallCount(models.Model):
    """Outcome counters per app, endpoint and errcode, for ``_control/.../stats`` and benchmarks."""

    app = models.ForeignKey(SandboxApp, on_delete=models.CASCADE, related_name="call_counts")
    endpoint = models.CharField(max_length=32)
    errcode = models.IntegerField()
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "endpoint", "errcode"], name="sandbox_callcount_unique")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.errcode}: {self.count}"
