"""Every way templates_app plugs into formids, in one place.

Dependencies point templates_app → formids: formids never imports templates_app. Where formids has to ask
templates_app something, or tell it something, it goes through a hook defined here, and templates_app
registers itself in its AppConfig.ready() (templates_app/apps.py):

- the subscribe template catalogue: which subscribe template ids an app has, one-time or long-term;
- claim owners: records that own a credit's claim, which the stale-claim sweep leaves alone;
- credit arrivals: users gained credits (held deliveries wait for them), and who waits for one;
- the ``subscribe_message_sent`` signal: WeChat reported the outcome of a subscribe send.

Without templates_app installed formids still works: every subscribe template id is known, every stale
claim is released and nobody listens to the signal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from django.db.models import Exists
from django.dispatch import Signal

from tenants.models import MiniProgram

# --- the subscribe template catalogue ----------------------------------------------------------------
# The app's subscribe templates, one-time or long-term and whether active: the catalogue (templates_app)
# registers itself here and formids asks through this hook. With no catalogue registered, every id is known,
# active and one-time.
ONE_TIME, LONG_TERM = "one_time", "long_term"


class SubscribeTemplate(NamedTuple):
    subscription: str  # ONE_TIME or LONG_TERM
    active: bool  # a disabled template is known (its subscriptions can still end) but credits nothing


_provider: Callable[[MiniProgram], Mapping[str, SubscribeTemplate]] | None = None


def register_subscribe_template_provider(
    provider: Callable[[MiniProgram], Mapping[str, SubscribeTemplate]],
) -> None:
    """``provider(app)`` → {template id: SubscribeTemplate} for the app's subscribe templates that are not
    deleted (active and disabled)."""
    global _provider
    _provider = provider


def subscribe_templates(app: MiniProgram) -> Mapping[str, SubscribeTemplate] | None:
    """{template id: SubscribeTemplate} of the app's (not deleted) subscribe templates, or None when no
    catalogue is installed (accept any id, as one-time)."""
    return _provider(app) if _provider is not None else None


def known_subscribe_template_ids(app: MiniProgram) -> set[str] | None:
    """The app's active subscribe template ids, or None when no catalogue is installed (accept any)."""
    templates = subscribe_templates(app)
    return {tid for tid, t in templates.items() if t.active} if templates is not None else None


def long_term_ids(templates: Mapping[str, SubscribeTemplate] | None) -> set[str]:
    """The long-term ones among ``templates`` (active or not)."""
    return {tid for tid, t in (templates or {}).items() if t.subscription == LONG_TERM}


# --- claim owners ------------------------------------------------------------------------------------
# Records that own a claim for as long as they exist (templates_app's pending deliveries): the stale-claim
# sweep leaves their credits claimed. Each is a callable giving an Exists() over the credit (OuterRef("pk")).
_claim_owners: list[Callable[[], Exists]] = []


def register_claim_owner(owner: Callable[[], Exists]) -> None:
    if owner not in _claim_owners:
        _claim_owners.append(owner)


def claim_owners() -> list[Callable[[], Exists]]:
    """The registered claim owners, for formids.services.release_stale."""
    return list(_claim_owners)


# --- credits arriving ---------------------------------------------------------------------------------
# Told, inside the transaction that stored them, that users of an app gained credits: templates_app's held
# deliveries wait for exactly that. Each listener gets (app id, openids).
_arrival_listeners: list[Callable[[int, list[str]], None]] = []


def register_credit_arrival_listener(listener: Callable[[int, list[str]], None]) -> None:
    if listener not in _arrival_listeners:
        _arrival_listeners.append(listener)


# A listener may also tell, as SQL, whether a user waits for a credit at all: an SDK upload asks it in the
# statement that stores the credits (a probe of an index) and calls the listeners only for a user who waits,
# instead of every listener's own round trip on every upload. The SQL is a boolean expression, true when the
# user waits, with the parameter %(app)s (the app's id) and the placeholder {openid} for the user's openid (an
# SQL expression: the upload's statement asks it for each of its uploaders).
_arrival_probes: list[str] = []


def register_credit_arrival_probe(sql: str) -> None:
    if sql not in _arrival_probes:
        _arrival_probes.append(sql)


def credit_arrival_probe_sql(openid: str) -> str:
    """SQL of one boolean: does the user (%(app)s, the SQL expression ``openid``) wait for a credit? True when
    a listener registered no probe (it is then always called)."""
    if len(_arrival_probes) < len(_arrival_listeners):
        return "true"
    if not _arrival_probes:
        return "false"
    return " OR ".join(f"({probe.replace('{openid}', openid)})" for probe in _arrival_probes)


def credits_arrived(app_id: int, openids: list[str]) -> None:
    """Called by formids.services wherever usable credits are stored (formIds, prepay_ids, subscribe
    accepts and long-term subscriptions, from the SDK or WeChat's events)."""
    for listener in _arrival_listeners:
        listener(app_id, openids)


# --- signals -----------------------------------------------------------------------------------------
subscribe_message_sent = Signal()
"""WeChat reported the final outcome of a subscribe send (``subscribe_msg_sent_event``), one signal per
item; formids.events sends it. Sent with ``sender=MiniProgram`` and the keyword arguments ``app``
(MiniProgram), ``openid`` (str), ``template_id`` (str), ``msgid`` (int: the ``msgid`` subscribe/send
answered), ``errcode`` (int, 0 = delivered) and ``errstatus`` (str, e.g. "success").

It is sent inside the transaction that stores the event, once per stored event (a retried event push is
deduplicated before it): a receiver's writes commit or roll back with it, and a receiver that raises makes
the event push fail (HTTP 500, nothing stored) so that WeChat retries it. WeChat may push the event before
the sender has recorded the msgid (the sandbox always does): the InboundEvent keeps ``msgid`` in its
payload items for a later reconciliation.
"""
