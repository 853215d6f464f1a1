"""Tenants, their members, their mini-programs and their API keys."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from pushhub import crypto


class Tenant(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    # membership_unique_user (tenant, user) is the tenant's index.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"

    @property
    def can_write(self) -> bool:
        return self.role in {self.Role.OWNER, self.Role.ADMIN}

    @property
    def is_owner(self) -> bool:
        return self.role == self.Role.OWNER


class TenantScopedQuerySet(models.QuerySet):
    """Every tenant-owned lookup starts here, so a query without a tenant reads as a bug in review."""

    def for_tenant(self, tenant: Tenant):
        return self.filter(tenant=tenant)


class MiniProgramQuerySet(TenantScopedQuerySet):
    def live(self):
        return self.filter(deleted_at__isnull=True)


class MiniProgram(models.Model):
    class CreditSource(models.TextChoices):
        SDK = "sdk", "SDK reports"
        EVENTS = "events", "WeChat events"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="apps")
    appid = models.CharField(max_length=18, db_index=True)
    name = models.CharField(max_length=100)
    # Fernet ciphertext (pushhub.crypto); the plaintext lives only in memory while a call needs it.
    secret_ciphertext = models.TextField(blank=True, default="")
    secret_last4 = models.CharField(max_length=4, blank=True, default="")
    sandbox = models.BooleanField(default=False)
    events_token = models.CharField(max_length=32)
    events_aes_key_ciphertext = models.TextField()
    # The key of the user_hash HMAC that lets the SDK bind an alias (../shared/API.md "Audience"); Fernet
    # ciphertext like the AppSecret. Made at registration (and by tenants/0002 for older apps); rotatable.
    identity_secret_ciphertext = models.TextField(blank=True, default="")
    credit_source = models.CharField(max_length=10, choices=CreditSource.choices, default=CreditSource.SDK)
    # The SDK's in-app inbox (messages kept for the user to read in the app); off: nothing is stored for it.
    inbox_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Soft delete: history (pushes, deliveries) stays; the AppID can be registered again.
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = MiniProgramQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["appid"], condition=Q(deleted_at__isnull=True), name="miniprogram_unique_live_appid"
            )
        ]
        verbose_name = "mini-program"

    def __str__(self) -> str:
        return f"{self.name} ({self.appid})"

    # The secrets (AppSecret, AES key, identity secret) are write-only attributes: set_* encrypts, get_*
    # decrypts on demand.
    def set_secret(self, secret: str) -> None:
        self.secret_ciphertext = crypto.encrypt(secret)
        self.secret_last4 = secret[-4:]

    def get_secret(self) -> str:
        return crypto.decrypt(self.secret_ciphertext)

    def set_events_aes_key(self, key: str) -> None:
        self.events_aes_key_ciphertext = crypto.encrypt(key)

    def get_events_aes_key(self) -> str:
        return crypto.decrypt(self.events_aes_key_ciphertext)

    def set_identity_secret(self, secret: str) -> None:
        self.identity_secret_ciphertext = crypto.encrypt(secret)

    def get_identity_secret(self) -> str:
        return crypto.decrypt(self.identity_secret_ciphertext)

    @property
    def secret_hint(self) -> str:
        return "****" + self.secret_last4

    @property
    def events_path(self) -> str:
        return reverse("wechat-events", args=[self.appid])


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Write"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    # The key is `phk_<prefix>_<secret>`; we keep the visible prefix (indexed, for lookup and display)
    # and an HMAC of the whole key. The key itself is shown once and never stored.
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.READ)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"phk_{self.prefix}… ({self.scope})"

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEvent(models.Model):
    """Who created, changed, rotated, revoked or deleted what. Never holds a secret."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.CharField(max_length=200)  # "user:alice@example.com", "key:phk_ab12cd34", "system"
    action = models.CharField(max_length=50)  # "app.create", "app.secret_change", "api_key.revoke", ...
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=100)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return (
            f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.object_type}:{self.object_id}"
        )
