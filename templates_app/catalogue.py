"""The template catalogue and its trigger URLs: create, change, delete, rotate, sync from WeChat.

Each verb validates before it acts, then changes the row(s) atomically and records an AuditEvent. Calls to
WeChat (sync) happen before the database transaction, so a WeChat failure changes nothing.

A trigger token is the credential of its URL: ``secrets.token_urlsafe(32)`` (256 bits). The row keeps its
SHA-256 (looked up through a unique index, so no scan and nothing usable in clear) and a Fernet ciphertext
(so the API can show the URL again). Rotating replaces both, so the old URL stops resolving at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from formids import services as credit_services
from formids.hooks import SubscribeTemplate
from pushhub import crypto
from pushhub.api import ApiError, absolute_url, wechat_failure
from pushhub.sql import CompiledSelect
from pushhub.wechat import rules
from pushhub.wechat.client import WeChatClient
from pushhub.wechat.errors import API_RETIRED_ERRCODE, WeChatError, WeChatUnavailable
from templates_app.models import Template
from tenants.models import MiniProgram
from tenants.services import audit

TOKEN_BYTES = 32  # 256 bits of randomness; token_urlsafe gives 43 characters
# Anything longer than this (or with other characters) cannot be one of our tokens: no need to hash it.
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
TEMPLATE_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FORMID_KEY = re.compile(r"^keyword\d{1,2}$")
SUBSCRIBE_KEY = re.compile(r"^[a-z_]+\d{1,2}$")
MAX_FIELDS = 20
MAX_FIELD_NAME = 20
MAX_TITLE = 100
MAX_PAGE = 1024
UPDATABLE = ("title", "fields", "page", "emphasis_keyword", "status", "trigger_enabled", "track_opens")


# --- trigger tokens ------------------------------------------------------------------------------
def new_trigger_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_trigger_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def set_trigger_token(template: Template, token: str) -> None:
    """Put ``token`` on the (unsaved) instance: its hash for lookups, its ciphertext to show it again."""
    template.trigger_token_hash = hash_trigger_token(token)
    template.trigger_token_ciphertext = crypto.encrypt(token)


# The hash is unique: [:1], not first() and its ORDER BY. Without the tenant's columns (a trigger needs only its
# id, on the app). Compiled once per connection: the ORM building it was most of the look-up's CPU.
_TEMPLATE_BY_TOKEN_HASH = CompiledSelect(
    lambda digest: Template.objects.select_related("app").filter(trigger_token_hash=digest)[:1]
)


def template_for_trigger_token(token: str) -> Template | None:
    """The template whose trigger URL carries ``token``, whatever its status (the caller answers 410 for a
    disabled or deleted one), or None (404): unknown, malformed or rotated away."""
    if not isinstance(token, str) or not TOKEN_SHAPE.match(token):
        return None
    digest = hash_trigger_token(token)
    found = _TEMPLATE_BY_TOKEN_HASH.fetch(digest)
    template = found[0] if found else None
    if template is None or not hmac.compare_digest(template.trigger_token_hash, digest):
        return None
    return template


def trigger_url(request, template: Template) -> str:
    """The absolute URL of the template's trigger endpoint, ``…/t/{token}``."""
    return absolute_url(request, template.trigger_path)


# --- validation ----------------------------------------------------------------------------------
def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "validation_error", message, field=field)


def _clean_kind(kind) -> str:
    if kind not in Template.Kind.values:
        raise _invalid("kind", f"kind must be one of {', '.join(Template.Kind.values)}.")
    return kind


def _clean_template_id(template_id) -> str:
    if not isinstance(template_id, str) or not TEMPLATE_ID_SHAPE.match(template_id):
        raise _invalid("template_id", "template_id must be WeChat's id: 1-128 letters, digits, '_' or '-'.")
    return template_id


def _clean_title(title) -> str:
    if not isinstance(title, str) or not title.strip():
        raise _invalid("title", "title must be a non-empty string.")
    title = title.strip()
    if len(title) > MAX_TITLE:
        raise _invalid("title", f"title must be at most {MAX_TITLE} characters.")
    return title


def clean_fields(kind: str, fields) -> list[dict[str, str]]:
    """``[{key, name?}]``, 1..20 of them, unique keys shaped for the kind: ``keyword1``… (formId) or
    ``thing1``, ``time2``, ``character_string3``… (subscribe: the letters are the value type)."""
    if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_FIELDS:
        raise _invalid("fields", f"fields must be a list of 1 to {MAX_FIELDS} {{key, name}} objects.")
    pattern, example = (
        (FORMID_KEY, "keyword1, keyword2, …")
        if kind == Template.Kind.FORMID
        else (SUBSCRIBE_KEY, "thing1, time2, character_string3, …")
    )
    cleaned: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, item in enumerate(fields):
        where = f"fields[{index}]"
        if not isinstance(item, dict):
            raise _invalid(where, "Each field must be an object {key, name}.")
        unknown = sorted(set(item) - {"key", "name"})
        if unknown:
            raise _invalid(f"{where}.{unknown[0]}", "Unknown field attribute; use key and name.")
        key, name = item.get("key"), item.get("name", "")
        if not isinstance(key, str) or not pattern.match(key):
            raise _invalid(f"{where}.key", f"key must look like {example} for a {kind} template.")
        if key in seen:
            raise _invalid(f"{where}.key", f"key {key!r} appears twice.")
        if name is None:
            name = ""
        if not isinstance(name, str):
            raise _invalid(f"{where}.name", "name must be a string.")
        name = name.strip()
        if len(name) > MAX_FIELD_NAME:
            raise _invalid(f"{where}.name", f"name must be at most {MAX_FIELD_NAME} characters.")
        seen.add(key)
        cleaned.append({"key": key, "name": name})
    return cleaned


def clean_page(page) -> str:
    """An in-app path like ``pages/order?id=1``; one leading ``/`` is dropped (WeChat refuses it: 41030)."""
    if page is None:
        return ""
    if not isinstance(page, str):
        raise _invalid("page", "page must be a string.")
    if page.startswith("/"):
        page = page[1:]
    if page.startswith("/") or any(ch.isspace() for ch in page):
        raise _invalid("page", "page must be an in-app path like pages/order?id=1 (no spaces).")
    if len(page) > MAX_PAGE:
        raise _invalid("page", f"page must be at most {MAX_PAGE} characters.")
    return page


def clean_emphasis_keyword(
    kind: str, fields: list[dict[str, str]], value, *, code: str = "validation_error"
) -> str:
    """``keywordN.DATA`` naming one of a formId template's fields, or "" for none. A send request checks its
    own emphasis_keyword here too, answering ``code`` invalid_value (its code for a value WeChat would
    refuse) where the catalogue answers validation_error."""
    if value is None or value == "":
        return ""
    if kind != Template.Kind.FORMID:
        raise _invalid("emphasis_keyword", "emphasis_keyword is for formId templates only.")
    allowed = [f"{f['key']}.DATA" for f in fields]
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(
            400, code, f"emphasis_keyword must be one of {', '.join(allowed)}.", field="emphasis_keyword"
        )
    return value


def clean_subscription(kind: str, subscription) -> str:
    """A subscribe template's ``one_time`` (the default) or ``long_term``; formId templates have none
    (stored as ""), so giving one for them is a 400 naming ``subscription``."""
    if kind != Template.Kind.SUBSCRIBE:
        if subscription is not None and subscription != "":
            raise _invalid("subscription", "subscription is for subscribe templates only.")
        return ""
    if subscription is None or subscription == "":
        return Template.Subscription.ONE_TIME
    if subscription not in Template.Subscription.values:
        raise _invalid(
            "subscription", f"subscription must be one of {', '.join(Template.Subscription.values)}."
        )
    return subscription


def subscription_for_type(wechat_type) -> str:
    """WeChat's template ``type`` (gettemplate): 3 long-term, anything else (2) one-time. Numbers may
    arrive as strings."""
    return (
        Template.Subscription.LONG_TERM if str(wechat_type).strip() == "3" else Template.Subscription.ONE_TIME
    )


def _conflict() -> ApiError:
    return ApiError(
        409,
        "conflict",
        "This app already has a template with this kind and template_id.",
        field="template_id",
    )


def _duplicate_exists(app: MiniProgram, kind: str, template_id: str) -> bool:
    return (
        Template.objects.for_tenant(app.tenant_id)
        .visible()
        .filter(app=app, kind=kind, template_id=template_id)
        .exists()
    )


# --- verbs ---------------------------------------------------------------------------------------
def _audit_context(template: Template) -> dict[str, str]:
    """What an owner reading the audit log needs to tell templates apart (the object id is our pk)."""
    return {"appid": template.app.appid, "template_id": template.template_id, "title": template.title}


def create_template(
    app: MiniProgram,
    *,
    kind: str,
    template_id: str,
    title: str,
    fields: list[dict[str, str]],
    page: str = "",
    emphasis_keyword: str = "",
    subscription: str | None = None,
    track_opens: bool = True,
    source: str = Template.Source.MANUAL,
    actor: str,
) -> Template:
    """A template with a fresh trigger URL. 409 ``conflict`` when the app already has a live template of
    that kind and WeChat id. ``subscription``: a subscribe template's one_time (default) or long_term.
    ``track_opens``: its messages' pages carry the open ref (``ph=``, templates_app.opens_ref)."""
    if app.deleted_at is not None:
        raise ApiError(404, "not_found", "Not found.")
    kind = _clean_kind(kind)
    template_id = _clean_template_id(template_id)
    title = _clean_title(title)
    fields = clean_fields(kind, fields)
    page = clean_page(page)
    emphasis_keyword = clean_emphasis_keyword(kind, fields, emphasis_keyword)
    subscription = clean_subscription(kind, subscription)
    track_opens = _clean_switch("track_opens", track_opens)
    if source not in Template.Source.values:
        raise ValueError(f"source must be one of {Template.Source.values}")
    if _duplicate_exists(app, kind, template_id):
        raise _conflict()
    template = Template(
        app=app,
        kind=kind,
        template_id=template_id,
        title=title,
        fields=fields,
        page=page,
        emphasis_keyword=emphasis_keyword,
        subscription=subscription,
        track_opens=track_opens,
        source=source,
    )
    set_trigger_token(template, new_trigger_token())
    try:
        with transaction.atomic():
            template.save()
            audit(
                app.tenant,
                actor,
                "template.create",
                "template",
                template.pk,
                appid=app.appid,
                kind=kind,
                template_id=template_id,
                **({"subscription": subscription} if subscription else {}),
            )
    except IntegrityError:  # lost a race with another create of the same (app, kind, template_id)
        raise _conflict() from None
    return template


def _clean_switch(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _invalid(name, f"{name} must be true or false.")
    return value


def _gone() -> ApiError:
    return ApiError(404, "not_found", "This template was deleted.")


def subscription_is_fixed() -> ApiError:
    return _invalid(
        "subscription",
        "subscription cannot be changed: it is WeChat's template type (the sync reads it). Delete the template "
        "and create it again, or sync.",
    )


def update_template(template: Template, *, actor: str, **changes: Any) -> Template:
    """Change title, fields, page, emphasis_keyword, status (active|disabled), trigger_enabled and/or
    track_opens.

    The result is validated as a whole (new fields must still contain the emphasis keyword). Deleting is
    ``delete_template``; a deleted template cannot be changed.
    """
    if "subscription" in changes:
        raise subscription_is_fixed()
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise _invalid(unknown[0], "This attribute cannot be changed.")
    if template.status == Template.Status.DELETED:
        raise _gone()
    values: dict[str, Any] = {}
    if "title" in changes:
        values["title"] = _clean_title(changes["title"])
    fields = template.fields
    if "fields" in changes:
        fields = values["fields"] = clean_fields(template.kind, changes["fields"])
    if "page" in changes:
        values["page"] = clean_page(changes["page"])
    if "emphasis_keyword" in changes or "fields" in changes:
        emphasis = changes.get("emphasis_keyword", template.emphasis_keyword)
        values["emphasis_keyword"] = clean_emphasis_keyword(template.kind, fields, emphasis)
    if "status" in changes:
        if changes["status"] not in (Template.Status.ACTIVE, Template.Status.DISABLED):
            raise _invalid("status", "status must be active or disabled (delete the template to remove it).")
        values["status"] = changes["status"]
    for switch in ("trigger_enabled", "track_opens"):
        if switch in changes:
            values[switch] = _clean_switch(switch, changes[switch])

    changed = [name for name, value in values.items() if getattr(template, name) != value]
    if not changed:
        return template
    with transaction.atomic():
        locked = Template.objects.select_for_update().get(pk=template.pk)
        if locked.status == Template.Status.DELETED:  # deleted since we read it
            raise _gone()
        for name in changed:
            setattr(template, name, values[name])
        template.save(update_fields=[*changed, "updated_at"])
        # The switches' new values too (enabled or disabled?); the content changes are named only.
        switches = {
            name: values[name] for name in ("status", "trigger_enabled", "track_opens") if name in changed
        }
        audit(
            template.app.tenant,
            actor,
            "template.update",
            "template",
            template.pk,
            fields=changed,
            **_audit_context(template),
            **switches,
        )
    return template


def delete_template(template: Template, actor: str) -> None:
    """Soft delete: the row (and its pushes) stay for history; its trigger URL answers 410 from now on,
    and the app may add a template with the same WeChat id again."""
    with transaction.atomic():
        updated = (
            Template.objects.filter(pk=template.pk)
            .exclude(status=Template.Status.DELETED)
            .update(status=Template.Status.DELETED, updated_at=timezone.now())
        )
        template.status = Template.Status.DELETED
        if updated:
            audit(
                template.app.tenant,
                actor,
                "template.delete",
                "template",
                template.pk,
                **_audit_context(template),
            )


def rotate_trigger_url(template: Template, actor: str) -> Template:
    """A new token for the trigger URL; the old URL answers 404 as soon as this commits."""
    if template.status == Template.Status.DELETED:
        raise _gone()
    set_trigger_token(template, new_trigger_token())
    with transaction.atomic():
        updated = (
            Template.objects.filter(pk=template.pk)
            .exclude(status=Template.Status.DELETED)
            .update(
                trigger_token_hash=template.trigger_token_hash,
                trigger_token_ciphertext=template.trigger_token_ciphertext,
                updated_at=timezone.now(),
            )
        )
        if not updated:
            raise _gone()
        audit(
            template.app.tenant,
            actor,
            "template.rotate_trigger_url",
            "template",
            template.pk,
            **_audit_context(template),
        )
    return template


# --- sync from WeChat ----------------------------------------------------------------------------
def _synced_fields(content) -> list[dict[str, str]]:
    """WeChat's content parsed into fields; names cut to our limit (WeChat's labels are its business)."""
    fields = rules.parse_template_fields(content if isinstance(content, str) else "")
    return [{"key": f["key"], "name": f["name"][:MAX_FIELD_NAME]} for f in fields][:MAX_FIELDS]


def _remote_templates(app: MiniProgram) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """{kind: {(kind, template_id): {title, fields}}} for each kind WeChat listed. A kind missing from the
    result was not listed: WeChat answered 45103 (the formId API is retired on real WeChat)."""
    client = WeChatClient.for_app(app)
    remote: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    try:
        subscribe = client.get_subscribe_templates()
    except (WeChatError, WeChatUnavailable) as exc:
        raise wechat_failure(exc) from None
    try:
        formid: list[dict[str, Any]] | None = client.list_formid_templates()
    except WeChatError as exc:
        if exc.errcode != API_RETIRED_ERRCODE:
            raise wechat_failure(exc) from None
        formid = None
    except WeChatUnavailable as exc:
        raise wechat_failure(exc) from None

    def collect(kind: str, items: list[dict[str, Any]], id_key: str) -> None:
        bucket = remote.setdefault(kind, {})
        for item in items:
            template_id = item.get(id_key) if isinstance(item, dict) else None
            if not isinstance(template_id, str) or not TEMPLATE_ID_SHAPE.match(template_id):
                continue  # nothing we could address a send to
            title = str(item.get("title") or template_id).strip()[:MAX_TITLE] or template_id
            wanted = {"title": title, "fields": _synced_fields(item.get("content"))}
            if kind == Template.Kind.SUBSCRIBE:
                wanted["subscription"] = subscription_for_type(item.get("type"))
            bucket[(kind, template_id)] = wanted

    collect(Template.Kind.SUBSCRIBE, subscribe, "priTmplId")
    if formid is not None:
        collect(Template.Kind.FORMID, formid, "template_id")
    return remote


def _current(template: Template, name: str):
    """A template attribute as the sync compares it (a subscribe template without a subscription, from
    before the field existed, is one-time)."""
    if name == "subscription" and template.kind == Template.Kind.SUBSCRIBE:
        return template.subscription or Template.Subscription.ONE_TIME
    return getattr(template, name)


def sync_templates(app: MiniProgram, actor: str) -> dict[str, int]:
    """Pull the app's templates from WeChat (subscribe: gettemplate; formId: wxopen/template/list).

    New ones are created (``source="synced"``, active, with a trigger URL; a subscribe template's
    ``subscription`` from WeChat's ``type``: 2 one_time, 3 long_term); synced ones whose title, fields or
    subscription changed are updated (their status is left alone: a template disabled here stays disabled);
    synced ones WeChat no longer lists are marked deleted. Manual templates are never touched, even when
    WeChat lists the same id. Returns ``{"created", "updated", "deleted"}``.
    """
    if app.deleted_at is not None:
        raise ApiError(404, "not_found", "Not found.")
    remote = _remote_templates(app)
    created = updated = deleted = 0
    try:
        with transaction.atomic():
            # One sync per app at a time: the app row is the lock.
            MiniProgram.objects.select_for_update().filter(pk=app.pk).first()
            local = {
                (t.kind, t.template_id): t
                for t in Template.objects.for_tenant(app.tenant_id)
                .visible()
                .select_for_update(of=("self",))
                .filter(app=app)
            }
            for kind, templates in remote.items():
                for key, wanted in templates.items():
                    template = local.get(key)
                    if template is None:
                        template = Template(
                            app=app,
                            kind=kind,
                            template_id=key[1],
                            title=wanted["title"],
                            fields=wanted["fields"],
                            subscription=wanted.get("subscription", ""),
                            source=Template.Source.SYNCED,
                        )
                        set_trigger_token(template, new_trigger_token())
                        template.save()
                        created += 1
                    elif template.source == Template.Source.SYNCED:
                        changed = [
                            name for name, value in wanted.items() if _current(template, name) != value
                        ]
                        if changed:
                            for name in changed:
                                setattr(template, name, wanted[name])
                            if "subscription" in changed:
                                # Users' accepts follow the template: standing subscriptions ↔ credits.
                                credit_services.reclassify_subscribe_credits(
                                    app, template.template_id, long_term=template.is_long_term
                                )
                            keys = {f["key"] for f in template.fields}
                            if template.emphasis_keyword.removesuffix(".DATA") not in keys | {""}:
                                template.emphasis_keyword = ""
                                changed.append("emphasis_keyword")
                            template.save(update_fields=[*changed, "updated_at"])
                            updated += 1
            vanished = [
                t.pk
                for key, t in local.items()
                if t.source == Template.Source.SYNCED and t.kind in remote and key not in remote[t.kind]
            ]
            if vanished:
                deleted = Template.objects.filter(pk__in=vanished).update(
                    status=Template.Status.DELETED, updated_at=timezone.now()
                )
            counts = {"created": created, "updated": updated, "deleted": deleted}
            audit(app.tenant, actor, "template.sync", "app", app.appid, **counts)
    except IntegrityError:  # a template with the same id was added by hand meanwhile
        raise ApiError(409, "conflict", "The templates changed during the sync; try again.") from None
    return counts


def subscribe_templates(app: MiniProgram) -> dict[str, SubscribeTemplate]:
    """The catalogue hook for formids (``formids.hooks.register_subscribe_template_provider``): the app's
    subscribe templates that are not deleted, one-time or long-term and whether active; one query."""
    rows = (
        Template.objects.for_tenant(app.tenant_id)
        .visible()
        .filter(app=app, kind=Template.Kind.SUBSCRIBE)
        .values_list("template_id", "subscription", "status")
    )
    return {
        tid: SubscribeTemplate(
            subscription or Template.Subscription.ONE_TIME, status == Template.Status.ACTIVE
        )
        for tid, subscription, status in rows
    }
