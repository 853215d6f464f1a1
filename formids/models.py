"""Credit pools: who can be messaged, with what, until when.

One Credit table, one lifecycle (../shared/DESIGN.md "Credits"):
available ──claim──▶ claimed ──ok / 41028 / 41029──▶ consumed ; claimed ──release──▶ available ;
available past its expiry margin ──sweep──▶ expired. Rows are kept after use for statistics.

A long-term subscription (kind ``long_term``, WeChat's template ``type`` 3) is one row per user and template
that stays ``available`` while it stands: claims pick it without changing it, sends never use it up, and it
ends (→ expired) on a reject / ban / change event or WeChat's 43101.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from tenants.models import MiniProgram


class MiniUserQuerySet(models.QuerySet):
    def for_tenant(self, tenant):
        return self.filter(app__tenant=tenant)


class MiniUser(models.Model):
    """A user of one mini-program, known by openid (from the SDK login or WeChat's events)."""

    # No index of its own: miniuser_unique_openid (app, openid) leads with it. A second index on app alone was
    # one more write per user and, with statistics older than an app's growth, the planner's pick for the
    # (app, openid) lookup, which then read every user of the app.
    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="users", db_index=False)
    openid = models.CharField(max_length=64)
    unionid = models.CharField(max_length=64, blank=True, default="")
    # The user turned this app's pushes off in the mini-program: triggers skip them unless forced.
    push_enabled = models.BooleanField(default=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now_add=True)
    # The tenant's own id for this user (../shared/API.md "Audience"): unique per app, bound by the tenant's
    # server (API) or by the SDK with the tenant's HMAC (user_hash). Null: not bound.
    alias = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001  (null = unbound; unique when set)

    objects = MiniUserQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "openid"], name="miniuser_unique_openid"),
            models.UniqueConstraint(
                fields=["app", "alias"], condition=Q(alias__isnull=False), name="miniuser_unique_alias"
            ),
        ]

    def __str__(self) -> str:
        return self.openid


class UserTag(models.Model):
    """One tag of one user: the tenant's segments ("vip", "city:shanghai").

    A row per (user, tag) rather than an array column: the same on PostgreSQL and SQLite; tagging 10,000 users
    is one INSERT … SELECT; a segment test is an index probe per user on (user, tag), as the credit test of an
    ``@all`` enumeration is, so a segment costs what ``@all`` costs per recipient; counts per tag and a tag's
    members read the (app, tag, user) index."""

    # No single-column FK indexes: (user, tag) and (app, tag, user) lead with each column already, and every
    # index is written again for each tag row (bulk tagging writes 10,000 at a time).
    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="user_tags", db_index=False)
    user = models.ForeignKey(MiniUser, on_delete=models.CASCADE, related_name="tag_rows", db_index=False)
    tag = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tag"], name="usertag_unique_user_tag")]
        indexes = [models.Index(fields=["app", "tag", "user"], name="usertag_app_tag_user")]

    def __str__(self) -> str:
        return self.tag


class Credit(models.Model):
    class Kind(models.TextChoices):
        FORMID = "formid", "formId"
        PREPAY = "prepay", "prepay_id"
        SUBSCRIBE = "subscribe", "subscribe"
        # A standing subscription to a long-term template: not used up by sends (see the module docstring).
        LONG_TERM = "long_term", "long-term subscription"

    class State(models.TextChoices):
        AVAILABLE = "available", "available"
        CLAIMED = "claimed", "claimed"
        CONSUMED = "consumed", "consumed"
        EXPIRED = "expired", "expired"

    class Source(models.TextChoices):
        SDK = "sdk", "SDK"
        EVENTS = "events", "WeChat events"
        API = "api", "API"

    # No foreign-key constraint in the database: a credit's app is its user's (every writer takes both from the
    # same row), and the user's constraint, with the user's own to its app, already proves that the app exists.
    # The check it made cost every stored credit a row lock on the app's one row, which every concurrent
    # upload of the app shared (a tenth of an upload's PostgreSQL time). Nor an index of its own: every read by
    # app is of usable credits (credit_quota) or of formId values (credit_unique_formid_value), and a deleted
    # app's credits go with its users (``user`` cascades; hence DO_NOTHING here, which keeps Django's deletion
    # from looking credits up by app). That index took an entry for every credit stored and, since a credit's
    # state is in its partial indexes' conditions (no HOT update), for every claim and consume of one.
    app = models.ForeignKey(
        MiniProgram, on_delete=models.DO_NOTHING, related_name="credits", db_constraint=False, db_index=False
    )
    user = models.ForeignKey(MiniUser, on_delete=models.CASCADE, related_name="credits")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # formId / prepay_id as WeChat gave it; empty for subscribe credits and long-term subscriptions.
    value = models.CharField(max_length=128, blank=True, default="")
    # Subscribe credits and long-term subscriptions are for one template; formIds serve any formId template.
    template_id = models.CharField(max_length=128, blank=True, default="")
    uses_left = models.PositiveSmallIntegerField(default=1)
    expires_at = models.DateTimeField(null=True, blank=True)  # null: no expiry (subscribe, long_term)
    state = models.CharField(max_length=10, choices=State.choices, default=State.AVAILABLE)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.SDK)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Who holds the claim (a delivery or chunk token): only the holder may consume or release it.
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)  # consumed or expired

    class Meta:
        constraints = [
            # A formId/prepay_id uploaded twice is stored once (bulk insert ignores the conflict).
            models.UniqueConstraint(
                fields=["app", "value"],
                condition=Q(kind__in=["formid", "prepay"]),
                name="credit_unique_formid_value",
            ),
            # One standing long-term subscription per user and template: a second accept adds nothing
            # (bulk insert ignores the conflict). Also the index a long-term claim probes.
            models.UniqueConstraint(
                fields=["user", "template_id"],
                condition=Q(kind="long_term", state="available"),
                name="credit_unique_long_term",
            ),
        ]
        indexes = [
            # claim: a user's soonest-to-expire usable formId/prepay_id
            models.Index(
                fields=["user", "expires_at", "id"],
                condition=Q(state="available", kind__in=["formid", "prepay"]),
                name="credit_claim_formid",
            ),
            # claim: a user's oldest subscribe credit for a template
            models.Index(
                fields=["user", "template_id", "id"],
                condition=Q(state="available", kind="subscribe"),
                name="credit_claim_subscribe",
            ),
            # quotas and the expiry sweep
            models.Index(
                fields=["app", "kind", "template_id"], condition=Q(state="available"), name="credit_quota"
            ),
            models.Index(
                fields=["expires_at"],
                condition=Q(state="available", expires_at__isnull=False),
                name="credit_expiry",
            ),
            # stale claims (worker died between claim and send)
            models.Index(fields=["claimed_at"], condition=Q(state="claimed"), name="credit_claimed"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value or self.template_id} ({self.state})"


class InboundEvent(models.Model):
    """Everything that could create or drop credits, as received: WeChat's message-push events and the
    SDK's subscribe reports. Kept even when it credited nothing (credit_source, unknown event)."""

    class Source(models.TextChoices):
        WECHAT = "wechat", "WeChat message push"
        SDK = "sdk", "SDK report"

    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="inbound_events")
    source = models.CharField(max_length=10, choices=Source.choices)
    event = models.CharField(max_length=64, blank=True, default="")  # e.g. subscribe_msg_popup_event
    openid = models.CharField(max_length=64, blank=True, default="")
    payload = models.JSONField(default=dict)
    # WeChat retries a push it thinks failed: FromUserName + CreateTime + content makes it idempotent.
    dedupe_key = models.CharField(max_length=64, blank=True, default="")
    outcome = models.JSONField(default=dict, blank=True)  # e.g. {"credited": {"TID": 1}}
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "dedupe_key"], condition=~Q(dedupe_key=""), name="inboundevent_unique_dedupe"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.event} {self.openid}"


# Rows per (app, day) and per (app, template, day) that the SDK upload's count is spread over (formids.funnel).
STAT_SHARDS = 8


class DailyStat(models.Model):
    """Per app and UTC day: credits collected, messages sent and failed (for quotas and charts). A day is the
    sum of its rows: an SDK upload counts in the row of its uploader's shard (``shard``, see there), every
    other count in shard 0."""

    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="daily_stats", db_index=False)
    day = models.DateField()
    formids_collected = models.PositiveIntegerField(default=0)
    subscribe_collected = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # 0..STAT_SHARDS-1: the SDK upload bumps the row of its uploader's id modulo STAT_SHARDS. Every upload of
    # an app counted in the same row made that row a lock all of them queued on (held to each upload's
    # commit): with 12 concurrent uploaders, 1.3-1.5 ms of PostgreSQL CPU an upload against 1.0 spread over
    # eight rows, and a third fewer uploads a second. Readers sum a day's rows.
    shard = models.PositiveSmallIntegerField(default=0, db_default=0)

    class Meta:
        # Also the app's index (no single-column one).
        constraints = [models.UniqueConstraint(fields=["app", "day", "shard"], name="dailystat_unique_day")]

    def __str__(self) -> str:
        return f"{self.app_id} {self.day}"


class TemplateDailyStat(models.Model):
    """The funnel per app, template and UTC day (``GET /api/v1/apps/{appid}/stats``), bumped with the events
    themselves (credit stored, outcome written, open reported), so a page view reads at most 366 rows a
    template. ``template_id`` is WeChat's id; "" holds what belongs to no template (formIds and prepay ids,
    which any formId template may use). A day is the sum of its rows (``shard``: as DailyStat's)."""

    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="+", db_index=False)
    template_id = models.CharField(max_length=128, blank=True, default="")
    day = models.DateField()
    credits_collected = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    opened = models.PositiveIntegerField(default=0)
    resubscribed = models.PositiveIntegerField(default=0)
    shard = models.PositiveSmallIntegerField(default=0, db_default=0)  # as DailyStat.shard

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "template_id", "day", "shard"], name="templatedailystat_unique_day"
            )
        ]
        indexes = [models.Index(fields=["app", "day"], name="templatedailystat_app_day")]

    def __str__(self) -> str:
        return f"{self.app_id} {self.template_id or '(formIds)'} {self.day}"


class RecentOpen(models.Model):
    """A message opened in the last 24 hours (``formids.funnel.record_open``): what the ``resubscribed``
    counter needs to know when a new subscribe credit comes. ``resubscribed_at`` is set by the first new
    credit of the template the user gives within 24 h of the open, so an open is counted at most once. Rows
    go after 24 h (the retention sweep's ``recent_opens``): the table holds a day of opens, no more."""

    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="+", db_index=False)
    openid = models.CharField(max_length=64)
    template_id = models.CharField(max_length=128)
    opened_at = models.DateTimeField()
    resubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The ingest lookup: this user's opens of these templates not yet counted, newest first.
            models.Index(
                fields=["app", "openid", "template_id", "opened_at"],
                condition=Q(resubscribed_at__isnull=True),
                name="recentopen_waiting",
            )
        ]

    def __str__(self) -> str:
        return f"{self.openid} {self.template_id} {self.opened_at:%Y-%m-%dT%H:%M:%SZ}"
