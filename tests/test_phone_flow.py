"""Issue 3's promise, over real HTTP: a test user's taps on the sandbox phone become credits in /quota,
then claim / consume / release move them as the lifecycle says."""

from __future__ import annotations

import pytest
import requests

from formids import services
from tests.conftest import random_appid, random_secret

pytestmark = pytest.mark.django_db(transaction=True)


class Phone:
    """Drives the sandbox's control endpoints (WeChat's side) and PushHub's SDK endpoints (ours)."""

    def __init__(self, base: str, appid: str):
        self.base, self.appid = base, appid
        self.control = f"{base}/sandbox/wechat/_control/apps/{appid}"
        self.session: str | None = None

    def wechat(self, method: str, path: str, **body):
        response = requests.request(method, f"{self.control}/{path}", json=body or None, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def sdk(self, method: str, path: str, body=None):
        headers = {"Authorization": f"Session {self.session}"} if self.session else {}
        return requests.request(
            method, f"{self.base}/sdk/v1/{self.appid}/{path}", json=body, headers=headers, timeout=10
        )


@pytest.fixture
def registered(live_server, sandbox_base, write_key):
    headers = {"Authorization": f"Bearer {write_key}"}
    appid = random_appid()
    created = requests.post(
        f"{live_server.url}/api/v1/apps",
        json={"appid": appid, "secret": random_secret(), "name": "Phone shop", "sandbox": True},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return live_server.url, appid, headers


def quota(base, appid, headers):
    response = requests.get(f"{base}/api/v1/apps/{appid}/quota", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_taps_become_credits_and_follow_the_lifecycle(registered):
    base, appid, headers = registered
    phone = Phone(base, appid)
    template = phone.wechat(
        "POST", "templates", kind="subscribe", title="发货通知", content="单号:{{character_string1.DATA}}"
    )
    # The tenant pulls the template into PushHub's catalogue: SDK reports for unknown ids are ignored.
    synced = requests.post(f"{base}/api/v1/apps/{appid}/templates/sync", headers=headers, timeout=10)
    assert synced.json() == {"created": 1, "updated": 0, "deleted": 0}, synced.text
    openid = phone.wechat("POST", "users")["openid"]

    # wx.login → our login endpoint → a session
    code = phone.wechat("POST", f"users/{openid}/login-code")["code"]
    login = phone.sdk("POST", "login", {"code": code})
    assert login.status_code == 200, login.text
    assert login.json()["openid"] == openid
    phone.session = login.json()["session"]

    # three form taps → three formIds uploaded
    formids = phone.wechat("POST", f"users/{openid}/formids", count=3)["formids"]
    upload = phone.sdk("POST", "formids", {"formids": formids})
    assert upload.json() == {"accepted": 3, "duplicates": 0, "rejected": []}

    # a tap on "accept" in wx.requestSubscribeMessage → reported → one credit
    answers = phone.wechat(
        "POST", f"users/{openid}/subscriptions", results={template["template_id"]: "accept"}
    )
    answers.pop("errMsg")
    report = phone.sdk("POST", "subscriptions", {"results": answers})
    assert report.json()["credited"] == {template["template_id"]: 1}

    assert quota(base, appid, headers) == {
        "users": 1,
        "users_reachable": 1,
        "credits": {"formid": 3, "subscribe": {template["template_id"]: 1}, "long_term": {}},
        "expiring_24h": 0,
        "sent_today": 0,
        "failed_today": 0,
    }
    me = phone.sdk("GET", "me").json()
    assert me["formid_credits"] == 3 and me["subscribe_credits"] == {template["template_id"]: 1}

    # the delivery side: claim one formId, WeChat accepts it → consumed; claim another, fail → released
    from tenants.models import MiniProgram

    app = MiniProgram.objects.get(appid=appid)
    sent = services.claim_credits(
        app, template_kind="formid", template_id="", openids=[openid], claimed_by="c1"
    )
    services.consume([sent[openid].id], "c1")
    assert quota(base, appid, headers)["credits"]["formid"] == 2
    retry = services.claim_credits(
        app, template_kind="formid", template_id="", openids=[openid], claimed_by="c2"
    )
    assert quota(base, appid, headers)["credits"]["formid"] == 1
    services.release([retry[openid].id], "c2")
    assert quota(base, appid, headers)["credits"]["formid"] == 2


def test_with_credit_source_events_wechats_push_credits_and_the_sdk_report_does_not(registered):
    base, appid, headers = registered
    switched = requests.patch(
        f"{base}/api/v1/apps/{appid}", json={"credit_source": "events"}, headers=headers, timeout=10
    )
    assert switched.status_code == 200, switched.text
    phone = Phone(base, appid)
    template = phone.wechat(
        "POST", "templates", kind="subscribe", title="到货提醒", content="商品:{{thing1.DATA}}"
    )
    tid = template["template_id"]
    openid = phone.wechat("POST", "users")["openid"]
    phone.session = phone.sdk(
        "POST", "login", {"code": phone.wechat("POST", f"users/{openid}/login-code")["code"]}
    ).json()["session"]

    # The tap: the sandbox (WeChat) pushes a signed, AES-encrypted subscribe_msg_popup_event to our events URL.
    answers = phone.wechat("POST", f"users/{openid}/subscriptions", results={tid: "accept"})
    assert phone.wechat("GET", "stats")["event_pushes"]["ok"] == 1
    # The SDK reports the same tap: recorded, not credited again.
    answers.pop("errMsg")
    assert phone.sdk("POST", "subscriptions", {"results": answers}).json()["credited"] == {}
    assert quota(base, appid, headers)["credits"]["subscribe"] == {tid: 1}

    # The user turns the template off in WeChat's settings: the change event drops the credit.
    phone.wechat("POST", f"users/{openid}/subscriptions/{tid}/off")
    assert quota(base, appid, headers)["credits"]["subscribe"] == {}


def test_rotating_the_events_credentials_keeps_the_sandbox_pushing(registered):
    base, appid, headers = registered
    requests.patch(
        f"{base}/api/v1/apps/{appid}", json={"credit_source": "events"}, headers=headers, timeout=10
    )
    rotated = requests.post(
        f"{base}/api/v1/apps/{appid}/events-credentials/rotate", headers=headers, timeout=10
    )
    assert rotated.status_code == 200
    phone = Phone(base, appid)
    tid = phone.wechat("POST", "templates", kind="subscribe", title="提醒", content="内容:{{thing1.DATA}}")[
        "template_id"
    ]
    openid = phone.wechat("POST", "users")["openid"]
    phone.wechat("POST", f"users/{openid}/subscriptions", results={tid: "accept"})
    assert quota(base, appid, headers)["credits"]["subscribe"] == {tid: 1}
