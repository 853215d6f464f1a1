"""Who a send addresses: the ``to`` of a send body (../shared/API.md "Sending" and "Sending to an audience").

- ``"OPENID"`` or ``["OPENID", …]`` (1..1000) and ``{"aliases": [...]}`` (1..1000 of the tenant's own user
  ids): listed recipients, claimed when the push starts (``pushes.recipients.prepare_listed``);
- ``"@all"`` and ``{"tags": {"all"?: [...], "any"?: [...], "none"?: [...]}}`` (a segment): broadcasts,
  enumerated by the workers when the push runs (``delivery.start``).

Form-encoded bodies write ``to=a,b``, ``to=@all`` or ``to=@tag:vip`` (``form_to``). Every fault is a 400
``validation_error`` naming the input at fault: ``to``, ``to[2]``, ``to.aliases[3]``, ``to.tags``,
``to.tags.any[0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from formids.audience import alias_problem, is_tag
from pushhub.api import ApiError
from templates_app.models import Push

MAX_RECIPIENTS = 1000  # openids or aliases in one push
MAX_OPENID_LENGTH = 64
MAX_SEGMENT_TAGS = 20  # in each of all / any / none
SEGMENT_KEYS = ("all", "any", "none")
TAG_PREFIX = "@tag:"  # form-encoded bodies: to=@tag:vip
Audience = Push.Audience


def _bad(message: str, field: str) -> None:
    raise ApiError(400, "validation_error", message, field=field)


@dataclass(frozen=True)
class Segment:
    """Users with every tag of ``all_of``, at least one of ``any_of`` (if given) and none of ``none_of``."""

    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    none_of: tuple[str, ...] = ()

    def as_json(self) -> dict:
        """{"all"?, "any"?, "none"?}: the lists given, deduplicated (an empty one is left out)."""
        lists = (self.all_of, self.any_of, self.none_of)
        return {key: list(tags) for key, tags in zip(SEGMENT_KEYS, lists, strict=True) if tags}

    @classmethod
    def from_json(cls, value: dict) -> Segment:
        return cls(*(tuple(value.get(key, ())) for key in SEGMENT_KEYS))


@dataclass(frozen=True)
class Addressing:
    """The parsed ``to``: an audience (``Push.Audience``) with its openids or aliases (deduplicated, in the
    request's order) or its segment."""

    audience: str
    names: tuple[str, ...] = ()
    segment: Segment | None = None

    @property
    def is_broadcast(self) -> bool:
        return self.audience in Push.BROADCASTS

    def as_json(self):
        """``to`` as the push stores it and the API shows it."""
        if self.audience == Audience.ALL:
            return "@all"
        if self.audience == Audience.OPENIDS:
            return list(self.names)
        if self.audience == Audience.ALIASES:
            return {"aliases": list(self.names)}
        return {"tags": self.segment.as_json()}

    @classmethod
    def of(cls, push: Push) -> Addressing:
        """What a stored push addresses (its ``to`` was validated when it was made)."""
        if push.audience == Audience.ALL:
            return cls(Audience.ALL)
        if push.audience == Audience.OPENIDS:
            return cls(Audience.OPENIDS, names=tuple(push.to))
        if push.audience == Audience.ALIASES:
            return cls(Audience.ALIASES, names=tuple(push.to["aliases"]))
        return cls(Audience.TAGS, segment=Segment.from_json(push.to["tags"]))


def parse_to(to) -> Addressing:
    """The ``to`` of a JSON send body; ApiError 400 naming the input at fault."""
    if to is None:
        _bad('Give "to": an openid, a list of openids, {"aliases": [...]}, {"tags": {...}} or "@all".', "to")
    if to == "@all":
        return Addressing(Audience.ALL)
    if isinstance(to, dict):
        return _parse_object(to)
    if isinstance(to, str):
        if to.startswith(TAG_PREFIX):
            _bad('In JSON a segment is {"tags": {"any": ["vip"]}} ("@tag:vip" is for form bodies).', "to")
        to = [to]
    if not isinstance(to, list) or not to:
        _bad('"to" must be an openid, a non-empty list of openids, an object or "@all".', "to")
    if len(to) > MAX_RECIPIENTS:
        _bad(f'At most {MAX_RECIPIENTS} recipients per push (use "@all" or a segment for more).', "to")
    for index, openid in enumerate(to):
        # Real openids never start with "@": "@all" or "@tag:…" in a list is a mistake, not a user.
        if not isinstance(openid, str) or not 0 < len(openid) <= MAX_OPENID_LENGTH or openid.startswith("@"):
            _bad(f"Recipient {index} is not an openid.", f"to[{index}]")
    return Addressing(Audience.OPENIDS, names=tuple(dict.fromkeys(to)))


def _parse_object(to: dict) -> Addressing:
    for key in to:
        if key not in ("aliases", "tags"):
            _bad(
                f'Unknown key {key!r}: "to" as an object is {{"aliases": [...]}} or {{"tags": {{...}}}}.',
                f"to.{key}",
            )
    if len(to) != 1:
        _bad('"to" is either {"aliases": [...]} or {"tags": {...}}, not both.', "to")
    if "aliases" in to:
        return Addressing(Audience.ALIASES, names=_parse_aliases(to["aliases"]))
    return Addressing(Audience.TAGS, segment=_parse_segment(to["tags"]))


def _parse_aliases(aliases) -> tuple[str, ...]:
    if not isinstance(aliases, list) or not aliases:
        _bad('"aliases" must be a non-empty list of aliases.', "to.aliases")
    if len(aliases) > MAX_RECIPIENTS:
        _bad(
            f"At most {MAX_RECIPIENTS} aliases per push (tag them and send to the tag for more).",
            "to.aliases",
        )
    for index, alias in enumerate(aliases):
        problem = alias_problem(alias)  # the rule the API and the SDK's identify bind aliases with
        if problem:
            _bad(problem, f"to.aliases[{index}]")
    return tuple(dict.fromkeys(aliases))


def _parse_segment(tags) -> Segment:
    if not isinstance(tags, dict):
        _bad('"tags" must be an object: {"all"?: [...], "any"?: [...], "none"?: [...]}.', "to.tags")
    for key in tags:
        if key not in SEGMENT_KEYS:
            _bad(f"Unknown key {key!r}: a segment has all, any and none.", f"to.tags.{key}")
    lists = []
    for key in SEGMENT_KEYS:
        given = tags.get(key, [])
        field = f"to.tags.{key}"
        if not isinstance(given, list):
            _bad(f'"{key}" must be a list of tags.', field)
        if len(given) > MAX_SEGMENT_TAGS:
            _bad(f'At most {MAX_SEGMENT_TAGS} tags in "{key}".', field)
        for index, tag in enumerate(given):
            if not is_tag(tag):
                _bad("A tag is 1 to 64 of A-Z a-z 0-9 _ . : -", f"{field}[{index}]")
        lists.append(tuple(dict.fromkeys(given)))
    segment = Segment(*lists)
    if not segment.all_of and not segment.any_of:
        _bad('A segment needs at least one tag in "all" or "any".', "to.tags")
    return segment


def form_to(values: list[str]):
    """``to`` of a form-encoded body (repeated or comma-separated) as its JSON: ``@all``; ``@tag:vip`` (several
    ``@tag:`` values: the users with any of those tags); otherwise openids."""
    items = [value.strip() for item in values for value in item.split(",") if value.strip()]
    if items == ["@all"]:
        return "@all"
    if items and all(item.startswith(TAG_PREFIX) for item in items):
        return {"tags": {"any": [item[len(TAG_PREFIX) :] for item in items]}}
    return items
