"""Audience: the tenant's own id for a user (``alias``) and its segments (``tags``) (../shared/API.md
"Audience — aliases and tags").

Every input is checked here, before anything is written, and a bad one is the contract's 400
``validation_error`` naming the input (``alias``, ``tags[3]``, ``aliases[17]``): the API, the SDK's identify
and the dashboard share these rules.

- An alias is 1 to 128 characters, stored and compared exactly as given (no trimming, no case folding, no
  Unicode normalisation), of the characters ``str.isprintable()`` accepts: letters, digits, punctuation,
  symbols (emoji), CJK and the ASCII space; never control characters (tab, newline, NUL…), format characters
  (zero-width, bidi overrides), other separators or private-use code points. Unique per app: binding an alias
  another user holds moves it (the latest binding wins, the other user's alias becomes null).
- A tag matches ``^[A-Za-z0-9_.:-]{1,64}$``; a user carries at most 50. Tags are a set: a tag listed twice
  is one tag, and lists come back sorted.
- Bulk tagging takes 1 to 10,000 openids and aliases per call, in a fixed number of statements whatever
  their number (one look-up of the users, one INSERT … SELECT … ON CONFLICT DO NOTHING or one DELETE).

Aliases and tags are the users' data, like their credits and push setting: changing them is not an audit
event (the identity secret that lets the SDK bind aliases is: tenants.services.rotate_identity_secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from formids.models import MiniUser, UserTag
from formids.quotas import has_usable_credit
from pushhub.api import ApiError
from pushhub.sql import any_of, pg_array
from tenants.models import MiniProgram

ALIAS_MAX_LENGTH = MiniUser._meta.get_field("alias").max_length  # 128
OPENID_MAX_LENGTH = MiniUser._meta.get_field("openid").max_length  # 64
TAG_MAX_LENGTH = UserTag._meta.get_field("tag").max_length  # 64
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"  # as the OpenAPI schema states it
TAG_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # used with fullmatch: "$" would let "vip\n" through
MAX_TAGS_PER_USER = 50
MAX_MEMBERS_PER_CALL = 10_000
# Two requests binding one alias to two users at once: the one that commits second meets the unique index,
# and tries again (it then sees the first one's binding and moves the alias: the latest binding wins).
ALIAS_BIND_ATTEMPTS = 3


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "not given": ``alias=None`` means unbind


def invalid(message: str, field: str) -> ApiError:
    return ApiError(400, "validation_error", message, field=field)


# --- the rules -----------------------------------------------------------------------------------------
def alias_problem(value) -> str | None:
    """Why ``value`` cannot be an alias, or None."""
    if not isinstance(value, str):
        return "An alias is a string (or null to unbind)."
    if not 1 <= len(value) <= ALIAS_MAX_LENGTH:
        return f"An alias is 1 to {ALIAS_MAX_LENGTH} characters."
    if not value.isprintable():
        return "An alias must not contain control, format or line-break characters."
    return None


def check_alias(value, field: str = "alias") -> str | None:
    """A valid alias, or None (unbind); a 400 naming ``field`` otherwise."""
    if value is None:
        return None
    problem = alias_problem(value)
    if problem:
        raise invalid(problem, field)
    return value


def is_tag(value) -> bool:
    return isinstance(value, str) and TAG_RE.fullmatch(value) is not None


def check_tag(value, field: str = "tag") -> str:
    if not is_tag(value):
        raise invalid(
            f"A tag is 1 to {TAG_MAX_LENGTH} of the characters A-Z, a-z, 0-9, '_', '.', ':' and '-'.", field
        )
    return value


def check_tags(values, field: str = "tags") -> list[str]:
    """A user's whole tag set: a list of at most 50 distinct tags (a repeated tag counts once), sorted."""
    if not isinstance(values, list):
        raise invalid("tags is a list of tags.", field)
    tags = sorted({check_tag(value, f"{field}[{index}]") for index, value in enumerate(values)})
    if len(tags) > MAX_TAGS_PER_USER:
        raise invalid(f"A user carries at most {MAX_TAGS_PER_USER} tags.", field)
    return tags


def check_members(openids, aliases) -> tuple[list[str], list[str]]:
    """The openids and aliases of a bulk call, each list without repeats (first occurrence kept): together
    1 to 10,000 entries as sent; an openid is 1 to 64 characters, an alias follows the alias rules."""
    for name, values in (("openids", openids), ("aliases", aliases)):
        if values is not None and not isinstance(values, list):
            raise invalid(f"{name} is a list of strings.", name)
    field = "aliases" if openids is None and aliases is not None else "openids"  # the list to blame
    openids, aliases = openids or [], aliases or []
    if not 1 <= len(openids) + len(aliases) <= MAX_MEMBERS_PER_CALL:
        raise invalid(f"Send 1 to {MAX_MEMBERS_PER_CALL:,} openids and aliases in all per call.", field)
    for index, openid in enumerate(openids):
        if not isinstance(openid, str) or not 1 <= len(openid) <= OPENID_MAX_LENGTH:
            raise invalid(
                f"An openid is a string of 1 to {OPENID_MAX_LENGTH} characters.", f"openids[{index}]"
            )
    for index, alias in enumerate(aliases):
        problem = alias_problem(alias)  # null is no alias here
        if problem:
            raise invalid(problem, f"aliases[{index}]")
    return list(dict.fromkeys(openids)), list(dict.fromkeys(aliases))


def user_hash(identity_secret: str, alias: str) -> str:
    """What the tenant's server computes for the SDK's identify: lowercase hex HMAC-SHA256, key = the UTF-8
    bytes of the app's identity secret, message = the UTF-8 bytes of the alias."""
    return hmac.new(identity_secret.encode(), alias.encode(), hashlib.sha256).hexdigest()


def user_hash_matches(app: MiniProgram, alias: str, candidate) -> bool:
    """Constant-time comparison with the hash of the app's current identity secret (upper-case hex is
    accepted too). A missing or non-text ``candidate``, or an app without a secret, never matches."""
    if not isinstance(candidate, str) or not app.identity_secret_ciphertext:
        return False
    if candidate.isascii():
        candidate = candidate.lower()
    expected = user_hash(app.get_identity_secret(), alias)
    return hmac.compare_digest(expected.encode(), candidate.encode())


# --- one user --------------------------------------------------------------------------------------
def set_user_audience(user: MiniUser, *, alias=UNSET, tags=UNSET) -> MiniUser:
    """Bind (or with None unbind) the user's alias and/or replace their whole tag set, in one transaction
    under the user's row lock (two changes of one user's tags never mix). Returns the user, updated.

    The alias's current holder is locked with the user, both in id order: two calls swapping aliases
    between two users would otherwise each lock one row first and then wait for the other's (a deadlock,
    seen on PostgreSQL)."""
    if alias is not UNSET:
        alias = check_alias(alias)
    if tags is not UNSET:
        tags = check_tags(tags)
    rows = Q(pk=user.pk)
    if isinstance(alias, str):
        rows |= Q(app_id=user.app_id, alias=alias)
    with transaction.atomic():
        list(MiniUser.objects.select_for_update(no_key=True).filter(rows).order_by("pk").values_list("pk"))
        if alias is not UNSET:
            _bind_alias(user, alias)
        if tags is not UNSET:
            _replace_tags(user, tags)
    return user


def _bind_alias(user: MiniUser, alias: str | None) -> None:
    """Clear the alias from whoever else holds it, then give it to ``user``: two UPDATEs on the (app, alias)
    index, the first of which takes the other holder's row lock. A concurrent binding of the same alias that
    commits first makes the second UPDATE meet the unique index: the savepoint is rolled back and the two
    UPDATEs run again, now seeing that binding (READ COMMITTED), so the latest binding wins."""
    for attempt in range(ALIAS_BIND_ATTEMPTS):
        try:
            with transaction.atomic():
                if alias is not None:
                    MiniUser.objects.filter(app_id=user.app_id, alias=alias).exclude(pk=user.pk).update(
                        alias=None
                    )
                MiniUser.objects.filter(pk=user.pk).update(alias=alias)
        except IntegrityError:
            if attempt + 1 == ALIAS_BIND_ATTEMPTS:
                raise ApiError(
                    409,
                    "conflict",
                    "This alias is being bound to other users right now; retry.",
                    field="alias",
                ) from None
        else:
            user.alias = alias
            return


def _replace_tags(user: MiniUser, tags: list[str]) -> None:
    UserTag.objects.filter(user=user).exclude(tag__in=tags).delete()
    kept = set(UserTag.objects.filter(user=user).values_list("tag", flat=True))
    UserTag.objects.bulk_create(
        [UserTag(app_id=user.app_id, user=user, tag=tag) for tag in tags if tag not in kept],
        ignore_conflicts=True,
    )


def tags_by_user(users: Iterable[MiniUser]) -> dict[int, list[str]]:
    """{user id: sorted tags} for a page of users, in one query (no query per user)."""
    tags: dict[int, list[str]] = {user.pk: [] for user in users}
    if tags:
        rows = UserTag.objects.filter(user_id__in=list(tags)).order_by("tag").values_list("user_id", "tag")
        for user_id, tag in rows:
            tags[user_id].append(tag)
    return tags


# --- many users ------------------------------------------------------------------------------------
def tag_members(
    app: MiniProgram, tag: str, *, openids=None, aliases=None, now: datetime | None = None
) -> dict:
    """Tag the app's users named by openid or alias: ``{"added": users newly tagged, "unknown": [the openids
    and aliases no user of the app holds, as sent]}``; users already tagged count in neither. A user who
    would pass 50 tags is a 400 naming them, and then nobody is tagged."""
    tag = check_tag(tag)
    openids, aliases = check_members(openids, aliases)
    now = now or timezone.now()
    with transaction.atomic():
        found = _find_members(app, openids, aliases)
        ids = sorted({pk for pk, _openid, _alias in found})
        _refuse_full_users(ids, tag, found, openids, aliases)
        added = _insert_tags(app, tag, ids, now)
    return {"added": added, "unknown": _unknown(found, openids, aliases)}


def untag_members(app: MiniProgram, tag: str, *, openids=None, aliases=None) -> dict:
    """Remove ``tag`` from the users named: ``{"removed": users that had it, "unknown": [...]}``."""
    tag = check_tag(tag)
    openids, aliases = check_members(openids, aliases)
    with transaction.atomic():
        found = _find_members(app, openids, aliases)
        ids = sorted({pk for pk, _openid, _alias in found})
        removed = 0
        if ids:
            # UserTag has no signals and nothing points at it: Django deletes in one statement.
            removed, _ = UserTag.objects.filter(
                any_of(UserTag, "user", ids, "bigint"), app=app, tag=tag
            ).delete()
    return {"removed": removed, "unknown": _unknown(found, openids, aliases)}


def _find_members(app: MiniProgram, openids: list[str], aliases: list[str]) -> list[tuple[int, str, str]]:
    """(id, openid, alias) of the app's users with one of ``openids`` or ``aliases``: one statement, a UNION
    of two index scans ((app, openid) and (app, alias)), each list passed as one array parameter."""
    users = MiniUser.objects.filter(app=app)
    parts = []
    if openids:
        parts.append(
            users.filter(any_of(MiniUser, "openid", openids, "text")).values_list("pk", "openid", "alias")
        )
    if aliases:
        parts.append(
            users.filter(any_of(MiniUser, "alias", aliases, "text")).values_list("pk", "openid", "alias")
        )
    return list(parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0])


def _refuse_full_users(
    ids: list[int], tag: str, found: list[tuple[int, str, str]], openids: list[str], aliases: list[str]
) -> None:
    """400 if a user named does not have ``tag`` yet and already carries 50 tags (one grouped query over
    their tag rows, on the (user, tag) index). Concurrent calls could still take a user past 50 by the
    number of calls racing; a user's own PATCH is exact (row lock)."""
    if not ids:
        return
    full = set(
        UserTag.objects.filter(any_of(UserTag, "user", ids, "bigint"))
        .values("user_id")
        .annotate(n=Count("id"), has_it=Count("id", filter=Q(tag=tag)))
        .filter(n__gte=MAX_TAGS_PER_USER, has_it=0)
        .values_list("user_id", flat=True)
    )
    if not full:
        return
    by_openid = {openid: pk for pk, openid, _alias in found}
    by_alias = {alias: pk for pk, _openid, alias in found if alias is not None}
    named = [(f"openids[{i}]", by_openid.get(o)) for i, o in enumerate(openids)]
    named += [(f"aliases[{i}]", by_alias.get(a)) for i, a in enumerate(aliases)]
    field = next(field for field, pk in named if pk in full)
    raise invalid(
        f"This user already carries {MAX_TAGS_PER_USER} tags; remove one before adding {tag!r}. "
        f"Nobody was tagged.",
        field,
    )


def _insert_tags(app: MiniProgram, tag: str, ids: Sequence[int], now: datetime) -> int:
    """One INSERT … SELECT over the ids (one array parameter) that skips users already tagged (ON CONFLICT
    on the (user, tag) unique index, so a concurrent call tagging the same users never fails): the number
    of rows it wrote is the number of users newly tagged."""
    if not ids:
        return 0
    table = UserTag._meta.db_table
    created_at = connection.ops.adapt_datetimefield_value(now)
    if connection.vendor == "postgresql":
        sql = f"""
            INSERT INTO {table} (app_id, user_id, tag, created_at)
            SELECT %s, user_id, %s, %s FROM unnest(%s::bigint[]) AS user_id
            ON CONFLICT (user_id, tag) DO NOTHING"""
        params = [app.pk, tag, created_at, pg_array(ids, "bigint")]
    else:  # SQLite, PushHub's other database. "WHERE true": its grammar wants one before an upsert clause.
        sql = f"""
            INSERT INTO {table} (app_id, user_id, tag, created_at)
            SELECT %s, value, %s, %s FROM json_each(%s) WHERE true
            ON CONFLICT (user_id, tag) DO NOTHING"""
        params = [app.pk, tag, created_at, json.dumps(list(ids))]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _unknown(found: list[tuple[int, str, str]], openids: list[str], aliases: list[str]) -> list[str]:
    known_openids = {openid for _pk, openid, _alias in found}
    known_aliases = {alias for _pk, _openid, alias in found if alias is not None}
    return [o for o in openids if o not in known_openids] + [a for a in aliases if a not in known_aliases]


# --- counts ------------------------------------------------------------------------------------------
def tag_counts(app: MiniProgram, now: datetime | None = None) -> list[dict]:
    """Every tag of the app with its users and ``users_reachable`` (tagged users with pushes on and a usable
    credit, "usable" as the quota says it): one grouped query over the (app, tag, user) index."""
    now = now or timezone.now()
    reachable = Q(user__push_enabled=True) & Q(has_usable_credit(now, "user_id"))
    return list(
        UserTag.objects.filter(app=app)
        .values("tag")
        .annotate(users=Count("id"), users_reachable=Count("id", filter=reachable))
        .order_by("tag")
    )
