"""Templates (the catalogue), their trigger URLs, pushes and the delivery log."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.urls import reverse

from formids.models import Credit
from pushhub import crypto
from tenants.models import MiniProgram, Tenant


class TemplateQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant):
        return self.filter(app__tenant=tenant, app__deleted_at__isnull=True)

    def visible(self):
        return self.exclude(status=Template.Status.DELETED)


class Template(models.Model):
    class Kind(models.TextChoices):
        FORMID = "formid", "formId template message"
        SUBSCRIBE = "subscribe", "subscribe message"

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        DISABLED = "disabled", "disabled"
        DELETED = "deleted", "deleted"

    class Source(models.TextChoices):
        MANUAL = "manual", "entered by hand"
        SYNCED = "synced", "synced from WeChat"

    class Subscription(models.TextChoices):
        """A subscribe template's kind of subscription (WeChat's template ``type``: 2 one-time, 3 long-term).
        formId templates have none (stored as "", shown as null)."""

        ONE_TIME = "one_time", "one-time"
        LONG_TERM = "long_term", "long-term"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="templates")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    template_id = models.CharField(max_length=128)  # WeChat's id (priTmplId / template_id)
    title = models.CharField(max_length=100)
    fields = models.JSONField(default=list)  # [{"key": "thing1", "name": "商品名称"}, ...] in content order
    page = models.CharField(max_length=1024, blank=True, default="")
    emphasis_keyword = models.CharField(max_length=64, blank=True, default="")
    # Subscribe templates: one_time (each accept is one send) or long_term (an accept stands until the user
    # turns it off); "" for formId templates. Set by the sync from WeChat's type, or on create.
    subscription = models.CharField(max_length=10, choices=Subscription.choices, blank=True, default="")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # The trigger URL's token is the credential: looked up by its SHA-256 (unique index, no scan, nothing
    # usable stored in clear) and kept Fernet-encrypted so the URL can be shown again in the API.
    trigger_token_hash = models.CharField(max_length=64, unique=True)
    trigger_token_ciphertext = models.TextField()
    trigger_enabled = models.BooleanField(default=True)
    # Sent messages' pages carry ph=<ref> so the SDK can report the open (templates_app.opens).
    track_opens = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TemplateQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "kind", "template_id"],
                condition=~Q(status="deleted"),
                name="template_unique_wechat_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.template_id})"

    def get_trigger_token(self) -> str:
        return crypto.decrypt(self.trigger_token_ciphertext)

    @property
    def trigger_path(self) -> str:
        return reverse("trigger", args=[self.get_trigger_token()])

    @property
    def keys(self) -> list[str]:
        return [f["key"] for f in self.fields]

    @property
    def is_long_term(self) -> bool:
        return self.kind == self.Kind.SUBSCRIBE and self.subscription == self.Subscription.LONG_TERM

    @property
    def credit_kind(self) -> str:
        """What a send with this template spends or stands on: formid (formIds and prepay_ids), subscribe
        (one-time accepts of this template) or long_term (a standing subscription to it)."""
        if self.kind == self.Kind.FORMID:
            return Credit.Kind.FORMID
        return Credit.Kind.LONG_TERM if self.is_long_term else Credit.Kind.SUBSCRIBE


class PushQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant):
        return self.filter(tenant=tenant)


class Push(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "scheduled"
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        CANCELED = "canceled", "canceled"

    class Audience(models.TextChoices):
        """Who the push addresses. Listed recipients (openids, aliases) are claimed when the push starts;
        broadcasts (@all, a tag segment) are enumerated by the workers when it runs."""

        OPENIDS = "openids", "openids"
        ALIASES = "aliases", "aliases"
        ALL = "all", "@all"
        TAGS = "tags", "tag segment"

    BROADCASTS = (Audience.ALL, Audience.TAGS)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="pushes", db_index=False)
    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="pushes")
    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="pushes")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    audience = models.CharField(max_length=8, choices=Audience.choices, default=Audience.OPENIDS)
    # ``to`` as the request gave it (lists deduplicated), and as the API shows it: ["OPENID", …],
    # {"aliases": […]}, {"tags": {"all"?, "any"?, "none"?}} or "@all". Aliases are resolved to openids when
    # the push starts (a scheduled push: when it runs); its deliveries keep the openids they were sent to.
    to = models.JSONField(default=list)
    data = models.JSONField(default=dict)  # normalised: {"thing1": {"value": "…", "color"?: "…"}}
    page = models.CharField(max_length=1024, blank=True, default="")
    emphasis_keyword = models.CharField(max_length=64, blank=True, default="")
    miniprogram_state = models.CharField(max_length=10, blank=True, default="")
    lang = models.CharField(max_length=5, blank=True, default="")
    force = models.BooleanField(default=False)
    # "hold": recipients without a credit wait this long for one (../shared/API.md "Hold until a credit
    # arrives"); the hold ends at hold_until, set when the recipients are prepared (a scheduled push's hold
    # starts when it runs).
    hold_seconds = models.PositiveIntegerField(null=True, blank=True)
    hold_until = models.DateTimeField(null=True, blank=True)
    send_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=100, blank=True, default="")  # "trigger", "key:phk_…"
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Counters (updated with F() by the workers; null while unknown for @all)
    recipients = models.IntegerField(null=True)
    sent = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    no_credit = models.IntegerField(null=True)
    opted_out = models.IntegerField(null=True)
    pending = models.IntegerField(default=0)
    held = models.IntegerField(default=0)  # deliveries waiting for a credit (status held)
    opened = models.IntegerField(default=0)  # deliveries whose message was opened (counted once each)
    # Every recipient has a Delivery row (or was counted as opted out): the push is done once nothing is
    # pending. Set by the request for explicit recipients, by the last chunk for @all.
    enumerated = models.BooleanField(default=False)

    objects = PushQuerySet.as_manager()

    class Meta:
        indexes = [
            # Also the tenant's index (no single-column one).
            models.Index(fields=["tenant", "-created_at"], name="push_tenant_recent"),
            models.Index(fields=["send_at"], condition=Q(status="scheduled"), name="push_scheduled_due"),
            # the stall sweep: pushes that should be moving
            models.Index(
                fields=["status"], condition=Q(status__in=["queued", "running"]), name="push_active"
            ),
            # the hold sweep: pushes with deliveries waiting for a credit, by the end of their hold
            models.Index(fields=["hold_until"], condition=Q(held__gt=0), name="push_holding"),
        ]

    def __str__(self) -> str:
        return f"push {self.id} ({self.status})"

    @property
    def is_broadcast(self) -> bool:
        """@all or a segment: the workers enumerate the recipients when the push runs."""
        return self.audience in self.BROADCASTS

    @property
    def claim_holder(self) -> str:
        """The claimed_by value of this push's credits: only this push may consume or release them."""
        return f"push:{self.id}"


class IdempotencyRecord(models.Model):
    """An Idempotency-Key seen on a template within 24 h, and the push it created."""

    # idempotency_unique_key (template, key) is its index.
    template = models.ForeignKey(
        Template, on_delete=models.CASCADE, related_name="idempotency_records", db_index=False
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # sha256 of the canonical request body
    push = models.ForeignKey(Push, on_delete=models.CASCADE, related_name="+")
    response = models.JSONField(default=dict)  # the first answer, returned again for a replay
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["template", "key"], name="idempotency_unique_key")]

    def __str__(self) -> str:
        return f"{self.key} → {self.push_id}"


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"
        NO_CREDIT = "no_credit", "no credit"
        HELD = "held", "held"  # no credit yet: waits until the push's hold_until for one

    # No single-column index on push: (push, openid) and (push, status) lead with it. Every index of a delivery
    # is written again at each status change (status is indexed, so no update is HOT): one index fewer is
    # two or three fewer index writes per delivery.
    push = models.ForeignKey(Push, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    openid = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # The credit claimed for this delivery (set before the send is attempted, so a redelivered chunk
    # knows an earlier attempt used it).
    credit = models.ForeignKey(Credit, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # WeChat's errcode as text ("40003"), or our own reason ("timeout_ambiguous", "canceled").
    errcode = models.CharField(max_length=32, blank=True, default="")
    errmsg = models.CharField(max_length=255, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    msgid = models.BigIntegerField(null=True, blank=True)  # WeChat's MsgID (delivery_msgid: only set ones)
    sent_at = models.DateTimeField(null=True, blank=True)
    # A held delivery's user gained a credit at this time: the next release (templates_app.holds) tries it.
    credit_arrived_at = models.DateTimeField(null=True, blank=True)
    # The user opened the mini-program from this message (the SDK reported its ph=<ref>), first time only.
    opened_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["push", "openid"], name="delivery_unique_recipient")]
        indexes = [
            models.Index(fields=["push", "status"], name="delivery_push_status"),
            # A credit arriving for a user finds their held deliveries by openid: a probe of this small
            # index (held rows only) on every credit upload, never a scan.
            models.Index(fields=["openid"], condition=Q(status="held"), name="delivery_held_openid"),
            # WeChat's send-result events name a delivery by MsgID: only deliveries that have one are indexed
            # (a delivery is written without it, and a lookup by a MsgID never needs the NULLs).
            models.Index(fields=["msgid"], condition=Q(msgid__isnull=False), name="delivery_msgid"),
        ]

    def __str__(self) -> str:
        return f"{self.openid} ({self.status})"


class InboxMessageQuerySet(models.QuerySet):
    def for_user(self, app_id: int, openid: str) -> InboxMessageQuerySet:
        """The only way to read an inbox: one app's, one user's."""
        return self.filter(app_id=app_id, openid=openid)


class InboxMessage(models.Model):
    """A sent message as the user's in-app inbox shows it (SDK ``inbox()``; ../shared/API.md "Opens and the
    in-app inbox"). Written when a delivery is sent, for apps with the inbox on; title and fields are read
    from the push and its template (pushes are kept), so a row is small. Kept ``INBOX_RETENTION_DAYS``
    whatever the deliveries' own retention."""

    app = models.ForeignKey(MiniProgram, on_delete=models.CASCADE, related_name="+", db_index=False)
    openid = models.CharField(max_length=64)
    push = models.ForeignKey(Push, on_delete=models.CASCADE, related_name="+", db_index=False)
    # The delivery it came from (no foreign key: deliveries may be swept first); an open marks it read.
    delivery_id = models.BigIntegerField(unique=True)
    sent_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)

    objects = InboxMessageQuerySet.as_manager()

    class Meta:
        indexes = [
            # the inbox page: one user's messages, newest first (keyset on (sent_at, id); the unread count
            # reads the same few rows). The retention sweep walks by id: ids grow with sent_at.
            models.Index(fields=["app", "openid", "-sent_at", "-id"], name="inbox_user_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.openid} {self.delivery_id}"
