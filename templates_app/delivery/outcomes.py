"""What a send's answer means for the delivery and its credit. Pure: no database, no cache.

=================================================  ===========================  ==========================
answer                                             delivery                     credit
=================================================  ===========================  ==========================
ok                                                 sent (+ msgid for subscribe) consumed (prepay: 1 use)
41029, formId used by an earlier attempt of ours   sent                         consumed (exhausted)
41028, or 41029 on a fresh formId                  next credit (≤ 3), else      consumed (exhausted)
                                                   failed with that errcode
43101                                              failed                       consumed (exhausted)
45103 (formId API retired)                         failed, errmsg api_retired   released
-1, 45009, 45011, token errors left after the      retry with backoff + jitter  kept (lease renewed);
client's own refresh, connect errors, formId       (DELIVERY_MAX_ATTEMPTS),     released when it fails
timeouts / HTTP 5xx                                then failed
subscribe or prepay_id: timeout, HTTP 5xx, reset   failed ``timeout_ambiguous`` consumed
any other errcode (40003, 40037, 41030, 47003 …)   failed                       released
push canceled                                      failed ``canceled``          released
=================================================  ===========================  ==========================

41028/41029 ("next credit") applies to formIds and prepay_ids; the chunk stops after
MAX_CREDITS_PER_DELIVERY credits and the delivery fails with that errcode.

A long-term subscription (credit kind ``long_term``) is never claimed: "consumed" and "released" leave it
standing, and "exhausted" (43101: the user turned it off) ends it. Its sends are never repeated blindly
either (a timeout is ``timeout_ambiguous``), like one-time subscribe sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from formids import services as credits
from formids.models import Credit
from pushhub.wechat.errors import (
    API_RETIRED_ERRCODE,
    ERRCODE_TEXT,
    WeChatError,
    WeChatTimeout,
    WeChatUnavailable,
)

MAX_CREDITS_PER_DELIVERY = 3  # 41028/41029: try the user's next formId, at most this many in all

SENT, FAILED, NO_CREDIT, RETRY, NEXT_CREDIT = "sent", "failed", "no_credit", "retry", "next_credit"
CONSUME, EXHAUST, RELEASE, KEEP, NOTHING = "consume", "exhaust", "release", "keep", "nothing"


@dataclass(frozen=True)
class Outcome:
    action: str  # sent | failed | no_credit | retry (stays pending) | next_credit (stays pending)
    settle: str  # what happens to the claimed credit: consume | exhaust | release | keep | nothing
    errcode: str = ""
    errmsg: str = ""


CANCELED = Outcome(FAILED, RELEASE, "canceled", "push canceled")
LOST_ATTEMPT = Outcome(
    FAILED,
    CONSUME,
    "timeout_ambiguous",
    "an earlier attempt may have reached WeChat (its worker stopped before the answer was recorded)",
)


def classify(error: BaseException | None, *, credit_kind: str, earlier_attempt: bool) -> Outcome:
    """What a send's answer means for the delivery and its credit (the table above).

    ``credit_kind``: formid (one use: a repeat is answered 41029, so repeating is safe), prepay (3 uses),
    subscribe or long_term (none of these may be repeated blindly). ``earlier_attempt``: this credit was used by an earlier
    attempt of this delivery whose answer may have been lost.
    """
    if error is None:
        return Outcome(SENT, CONSUME)
    formid = credit_kind in credits.FORMID_KINDS
    if isinstance(error, WeChatError):
        code, text = error.errcode, (error.errmsg or ERRCODE_TEXT.get(error.errcode, ""))[:255]
        if code == 41029 and credit_kind == Credit.Kind.FORMID and earlier_attempt:
            return Outcome(SENT, EXHAUST, "", "41029: delivered by an earlier attempt whose answer was lost")
        if formid and code in (41028, 41029):
            return Outcome(NEXT_CREDIT, EXHAUST, str(code), text)
        if code == 43101:
            return Outcome(FAILED, EXHAUST, str(code), text)
        if code == API_RETIRED_ERRCODE:
            return Outcome(FAILED, RELEASE, str(code), "api_retired")
        if error.is_transient or error.is_token_error:
            return Outcome(RETRY, KEEP, str(code), text)
        return Outcome(FAILED, RELEASE, str(code), text)
    if isinstance(error, WeChatUnavailable):
        if error.maybe_delivered and credit_kind != Credit.Kind.FORMID:
            return Outcome(FAILED, CONSUME, "timeout_ambiguous", error.reason[:255])
        code = "timeout" if isinstance(error, WeChatTimeout) else "unavailable"
        return Outcome(RETRY, KEEP, code, error.reason[:255])
    # A bug or an infrastructure error before the request left (e.g. the cache): try again later.
    return Outcome(RETRY, KEEP, "error", f"{type(error).__name__}: {error}"[:255])
