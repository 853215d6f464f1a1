"""Tenant-side verbs: create tenants, members and keys, register and change mini-programs; the audit log.

Each function validates, then acts atomically, then records an AuditEvent. Calls to WeChat happen before
the database transaction, so a WeChat failure leaves nothing half-created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from pushhub.api import ApiError, wechat_failure
from pushhub.wechat import tokens
from pushhub.wechat.client import WeChatClient, api_base_for
from pushhub.wechat.errors import WeChatError, WeChatUnavailable
from pushhub.wechat.sandbox import services as sandbox
from tenants.models import ApiKey, AuditEvent, Membership, MiniProgram, Tenant

APPID_RE = re.compile(r"^wx[0-9a-f]{16}$")
SECRET_RE = re.compile(r"^[0-9a-f]{32}$")
API_KEY_RE = re.compile(r"^phk_([A-Za-z0-9]{8})_([A-Za-z0-9]{40})$")
ALNUM = string.ascii_letters + string.digits
# last_used_at is written at most this often per key: a hot key must not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=5)


def _random_alnum(length: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(length))


# --- audit log -------------------------------------------------------------------------------------
# Every action recorded, by object type: what the owners' audit log page filters on. ``data`` never holds a
# secret (no AppSecret, key, trigger token or EncodingAESKey, not even a part of one).
AUDIT_ACTIONS: dict[str, tuple[str, ...]] = {
    "tenant": ("tenant.create",),
    "user": ("member.invite", "member.role_change", "member.remove"),
    "api_key": ("api_key.create", "api_key.revoke"),
    "app": (
        "app.create",
        "app.update",
        "app.secret_change",
        "app.events_credentials_rotate",
        "app.identity_secret_rotate",
        "app.delete",
        "template.sync",
    ),
    "template": ("template.create", "template.update", "template.rotate_trigger_url", "template.delete"),
    "push": ("push.cancel",),
    "webhook": (
        "webhook.create",
        "webhook.update",
        "webhook.rotate_secret",
        "webhook.delete",
        "webhook.disable",
        "webhook.resend",
    ),
}


def audit(tenant: Tenant, actor: str, action: str, obj_type: str, obj_id: str, **data) -> AuditEvent:
    return AuditEvent.objects.create(
        tenant=tenant, actor=actor, action=action, object_type=obj_type, object_id=str(obj_id), data=data
    )


def audit_action_prefixes() -> list[str]:
    """What the audit log can be filtered by: each family (``app``) and each action (``app.delete``)."""
    actions = sorted({action for actions in AUDIT_ACTIONS.values() for action in actions})
    return sorted({a.split(".")[0] for a in actions}) + actions


def audit_events_for(tenant: Tenant, *, action: str = "", object_type: str = "") -> QuerySet[AuditEvent]:
    """The tenant's events, newest first. ``action`` is a family (``template``) or one action
    (``template.delete``); filters that name nothing we record are ignored (the caller shows them as unset)."""
    events = AuditEvent.objects.for_tenant(tenant).order_by("-created_at", "-pk")
    if action in audit_action_prefixes():
        events = (
            events.filter(action=action) if "." in action else events.filter(action__startswith=action + ".")
        )
    if object_type in AUDIT_ACTIONS:
        events = events.filter(object_type=object_type)
    return events


# --- tenants and members -------------------------------------------------------------------------
@dataclass
class NewTenant:
    tenant: Tenant
    user: object
    password: str | None  # set only when we generated it


@transaction.atomic
def create_tenant(
    name: str, owner_email: str, password: str | None = None, slug: str | None = None
) -> NewTenant:
    """A tenant with its owner. An existing user with that e-mail becomes the owner (password untouched)."""
    name = name.strip()
    if not name:
        raise ValueError("tenant name is empty")
    base_slug = slugify(slug or name)[:40] or "tenant"
    slug = base_slug
    while Tenant.objects.filter(slug=slug).exists():
        slug = f"{base_slug}-{_random_alnum(4).lower()}"
    tenant = Tenant.objects.create(name=name, slug=slug)
    User = get_user_model()
    user = User.objects.filter(email__iexact=owner_email).first()
    generated = None
    if user is None:
        generated = None if password else secrets.token_urlsafe(12)
        user = User.objects.create_user(
            username=owner_email, email=owner_email, password=password or generated
        )
    Membership.objects.create(tenant=tenant, user=user, role=Membership.Role.OWNER)
    audit(tenant, f"user:{owner_email}", "tenant.create", "tenant", tenant.slug)
    return NewTenant(tenant, user, generated)


def invite_member(tenant: Tenant, email: str, role: str, *, actor: str) -> tuple[Membership, bool]:
    """Adds an existing user at once; an unknown e-mail gets an account without a usable password (the
    caller mails the link that sets it). Returns the membership and whether the account is new. Raises
    ValidationError if the user is already a member."""
    if role not in Membership.Role.values:
        raise ValueError(f"role must be one of {Membership.Role.values}")
    User = get_user_model()
    with transaction.atomic():
        user = (
            User.objects.filter(email__iexact=email).first()
            or User.objects.filter(username__iexact=email).first()
        )
        created = user is None
        if created:
            user = User.objects.create_user(username=email, email=email, password=None)  # unusable
        elif Membership.objects.filter(tenant=tenant, user=user).exists():
            raise ValidationError(_("%(email)s is already a member.") % {"email": email})
        membership = Membership.objects.create(tenant=tenant, user=user, role=role)
        audit(tenant, actor, "member.invite", "user", email, role=role, new_account=created)
    return membership, created


def _other_owners(membership: Membership) -> bool:
    """Locks the tenant's owners and says whether one besides ``membership`` remains."""
    owners = Membership.objects.select_for_update().filter(
        tenant=membership.tenant, role=Membership.Role.OWNER
    )
    return any(pk != membership.pk for pk in owners.values_list("pk", flat=True))


def _member_id(membership: Membership) -> str:
    return membership.user.email or membership.user.get_username()


def change_member_role(membership: Membership, role: str, *, actor: str) -> None:
    """Raises ValidationError when it would leave the team without an owner."""
    if role not in Membership.Role.values:
        raise ValueError(f"role must be one of {Membership.Role.values}")
    with transaction.atomic():
        if (
            membership.role == Membership.Role.OWNER
            and role != Membership.Role.OWNER
            and not _other_owners(membership)
        ):
            raise ValidationError(_("A team needs at least one owner."))
        old = membership.role
        if old == role:
            return
        membership.role = role
        membership.save(update_fields=["role"])
        audit(
            membership.tenant, actor, "member.role_change", "user", _member_id(membership), old=old, new=role
        )


def remove_member(membership: Membership, *, actor: str) -> None:
    """Raises ValidationError for the team's last owner."""
    with transaction.atomic():
        if membership.role == Membership.Role.OWNER and not _other_owners(membership):
            raise ValidationError(_("The last owner cannot be removed."))
        membership.delete()
        audit(membership.tenant, actor, "member.remove", "user", _member_id(membership), role=membership.role)


def audit_admin_member_changes(
    tenant: Tenant, before: dict[int, tuple[str, str]], after: dict[int, tuple[str, str]], *, actor: str
) -> None:
    """Records what an operator changed in the Django admin's member list, given the memberships
    ``{pk: (e-mail, role)}`` before and after the save (the admin writes the rows itself)."""
    for pk, (email, role) in before.items():
        if pk not in after or after[pk][0] != email:
            audit(tenant, actor, "member.remove", "user", email, role=role, via="admin")
    for pk, (email, role) in after.items():
        if pk not in before or before[pk][0] != email:
            audit(tenant, actor, "member.invite", "user", email, role=role, new_account=False, via="admin")
        elif before[pk][1] != role:
            audit(
                tenant, actor, "member.role_change", "user", email, old=before[pk][1], new=role, via="admin"
            )


# --- API keys --------------------------------------------------------------------------------------
def _digest(raw_key: str) -> str:
    return hmac.new(settings.API_KEY_HMAC_SECRET.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def create_api_key(
    tenant: Tenant, scope: str, name: str = "", created_by=None, actor: str = "system"
) -> tuple[ApiKey, str]:
    """Returns the key row and the plaintext key, which is shown once and never stored."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"scope must be one of {ApiKey.Scope.values}")
    for _attempt in range(5):
        prefix = _random_alnum(8)
        raw = f"phk_{prefix}_{_random_alnum(40)}"  # 40 × log2(62) ≈ 238 bits of secret
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    tenant=tenant,
                    name=name,
                    prefix=prefix,
                    digest=_digest(raw),
                    scope=scope,
                    created_by=created_by,
                )
        except IntegrityError:
            continue  # prefix collision: draw again
        audit(tenant, actor, "api_key.create", "api_key", prefix, scope=scope, name=name)
        return key, raw
    raise RuntimeError("could not allocate a unique API key prefix")


def authenticate_api_key(raw_key: str) -> ApiKey | None:
    """The active key matching ``raw_key``, compared in constant time; None otherwise."""
    match = API_KEY_RE.match(raw_key or "")
    if not match:
        return None
    key = ApiKey.objects.select_related("tenant").filter(prefix=match.group(1)).first()
    if key is None or not hmac.compare_digest(key.digest, _digest(raw_key)) or not key.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def revoke_api_key(key: ApiKey, actor: str = "system") -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit(key.tenant, actor, "api_key.revoke", "api_key", key.prefix)


# --- mini-programs ---------------------------------------------------------------------------------
def validate_appid(appid) -> str:
    if not isinstance(appid, str) or not APPID_RE.match(appid):
        raise ApiError(
            400, "invalid_appid", "appid must look like wx followed by 16 hex digits.", field="appid"
        )
    return appid


def validate_secret(secret) -> str:
    if not isinstance(secret, str) or not SECRET_RE.match(secret):
        raise ApiError(400, "invalid_secret", "secret must be 32 lowercase hex digits.", field="secret")
    return secret


def verify_credentials(appid: str, secret: str) -> None:
    """Ask real WeChat (WECHAT_API_BASE) for a token; map its refusal to the contract's errors."""
    try:
        WeChatClient(appid, secret, api_base_for(sandbox=False)).fetch_stable_token()
    except WeChatError as exc:
        if exc.is_credential_error:
            raise ApiError(
                400,
                "wechat_rejected_credentials",
                f"WeChat refused these credentials: {exc.errmsg or exc.errcode}",
                field="secret" if exc.errcode in {40125, 40243, 41004} else "appid",
                errcode=exc.errcode,
                errmsg=exc.errmsg,
            ) from None
        raise wechat_failure(exc) from None
    except WeChatUnavailable as exc:
        raise wechat_failure(
            exc, unreachable="Could not reach WeChat to verify the secret ({reason})."
        ) from None


def new_events_credentials() -> tuple[str, str]:
    """(Token, EncodingAESKey) for WeChat's 消息推送配置: 32 and 43 characters of [A-Za-z0-9]."""
    return _random_alnum(32), _random_alnum(43)


IDENTITY_SECRET_PREFIX = "phid_"


def new_identity_secret() -> str:
    """The key of an app's user_hash HMAC: ``phid_`` + 40 of [A-Za-z0-9] (≈ 238 bits). The prefix lets a
    secret scanner recognise one pasted where it does not belong."""
    return IDENTITY_SECRET_PREFIX + _random_alnum(40)


def register_app(
    tenant: Tenant, *, appid, secret, name, sandbox_app: bool = False, actor: str = "system"
) -> MiniProgram:
    validate_appid(appid)
    validate_secret(secret)
    if MiniProgram.objects.live().filter(appid=appid).exists():
        raise ApiError(409, "appid_taken", "This AppID is already registered.", field="appid")
    if sandbox_app:
        sandbox.register_app(appid, secret)
    else:
        verify_credentials(appid, secret)
    events_token, aes_key = new_events_credentials()
    app = MiniProgram(tenant=tenant, appid=appid, name=name, sandbox=sandbox_app, events_token=events_token)
    app.set_secret(secret)
    app.set_events_aes_key(aes_key)
    app.set_identity_secret(new_identity_secret())
    try:
        with transaction.atomic():
            app.save()
            audit(tenant, actor, "app.create", "app", appid, name=name, sandbox=sandbox_app)
    except IntegrityError:  # lost a race with another registration of the same AppID
        raise ApiError(409, "appid_taken", "This AppID is already registered.", field="appid") from None
    if sandbox_app:
        connect_sandbox_events(app)
    return app


def connect_sandbox_events(app: MiniProgram) -> None:
    """Have the sandbox push this app's WeChat events (subscribe popups, changes, sends) to our events
    URL with its token and AES key, as a tenant would configure 消息推送 in the WeChat console."""
    sandbox.configure_events(
        app.appid,
        url=settings.SANDBOX_EVENTS_BASE + app.events_path,
        token=app.events_token,
        aes_key=app.get_events_aes_key(),
    )


def update_app(app: MiniProgram, *, actor: str = "system", **changes) -> MiniProgram:
    """Change name, secret, sandbox, credit_source and/or inbox_enabled. A new secret for a WeChat app is verified first."""
    new_secret = changes.get("secret")
    if new_secret is not None:
        validate_secret(new_secret)
    old_sandbox = app.sandbox
    new_sandbox = changes.get("sandbox", old_sandbox)
    credentials_change = new_secret is not None or new_sandbox != old_sandbox
    if credentials_change:
        secret = new_secret if new_secret is not None else app.get_secret()
        if new_sandbox:
            sandbox.register_app(app.appid, secret)
        else:
            verify_credentials(app.appid, secret)

    fields = [
        f
        for f in ("name", "credit_source", "sandbox", "inbox_enabled")
        if f in changes and getattr(app, f) != changes[f]
    ]
    for field in fields:
        setattr(app, field, changes[field])
    if new_secret is not None:
        app.set_secret(new_secret)
    if not fields and new_secret is None:
        return app
    with transaction.atomic():
        extra = ["secret_ciphertext", "secret_last4"] if new_secret is not None else []
        app.save(update_fields=[*fields, *extra, "updated_at"])
        if fields:  # the new values: none of them is secret
            audit(
                app.tenant,
                actor,
                "app.update",
                "app",
                app.appid,
                fields=fields,
                **{f: changes[f] for f in fields},
            )
        # A new AppSecret is its own event (the one an owner looks for); the secret itself is never kept.
        if new_secret is not None:
            audit(app.tenant, actor, "app.secret_change", "app", app.appid)
    if credentials_change:
        tokens.forget_token(app.appid, api_base_for(old_sandbox))
        tokens.forget_token(app.appid, api_base_for(new_sandbox))
    if new_sandbox and not old_sandbox:
        connect_sandbox_events(app)
    return app


def rotate_events_credentials(app: MiniProgram, actor: str = "system") -> MiniProgram:
    app.events_token, aes_key = new_events_credentials()
    app.set_events_aes_key(aes_key)
    with transaction.atomic():
        app.save(update_fields=["events_token", "events_aes_key_ciphertext", "updated_at"])
        audit(app.tenant, actor, "app.events_credentials_rotate", "app", app.appid)
    if app.sandbox:
        connect_sandbox_events(app)
    return app


def rotate_identity_secret(app: MiniProgram, actor: str = "system") -> str:
    """A new identity secret; user hashes made with the old one fail from the commit on (each identify
    reads the secret from the database). Returns the new secret (for the answer; never in the audit log)."""
    secret = new_identity_secret()
    app.set_identity_secret(secret)
    with transaction.atomic():
        app.save(update_fields=["identity_secret_ciphertext", "updated_at"])
        audit(app.tenant, actor, "app.identity_secret_rotate", "app", app.appid)
    return secret


def delete_app(app: MiniProgram, actor: str = "system") -> None:
    """Soft delete: history stays, the secrets are wiped, the AppID can be registered again."""
    with transaction.atomic():
        app.deleted_at = timezone.now()
        app.secret_ciphertext = ""
        app.identity_secret_ciphertext = ""
        app.save(
            update_fields=["deleted_at", "secret_ciphertext", "identity_secret_ciphertext", "updated_at"]
        )
        audit(app.tenant, actor, "app.delete", "app", app.appid, name=app.name)
    tokens.forget_token(app.appid, api_base_for(app.sandbox))


def app_access_token(app: MiniProgram) -> tokens.CachedToken:
    """The access token PushHub holds for the app (the proxy endpoint), fetched if needed."""
    try:
        return tokens.get_token_info(WeChatClient.for_app(app))
    except (WeChatError, WeChatUnavailable) as exc:
        raise wechat_failure(exc, refused="WeChat refused to issue an access token.") from None
