"""End to end in a real browser: sign up, register a sandbox mini-program, add a subscribe template, collect a
credit on the sandbox phone, send a test, watch the push reach 100 % and the message land in the phone's inbox.

Deliveries really happen (over HTTP to the sandbox the live server serves), in the live server's process
(``inline_worker``). PUSHHUB_SCREENSHOTS=1 also refreshes docs/screenshots/*.png.
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

import pytest

pytest.importorskip("playwright")
if not (Path("/usr/bin/chromium").exists() and shutil.which("/usr/bin/chromium")):
    pytest.skip("no Chromium at /usr/bin/chromium", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from pushhub.wechat.sandbox import services as sandbox  # noqa: E402

DEADLINE = 20_000  # ms: the longest any step may take
TEMPLATE_ID = "TPL_E2E_SHIP"


@pytest.mark.django_db(transaction=True)
def test_sign_up_to_message_in_the_inbox(page, live_server, sandbox_base, inline_worker, screenshot):
    appid = "wx" + secrets.token_hex(8)
    email = f"e2e-{secrets.token_hex(4)}@shop.test"

    # Sign up → the dashboard.
    page.goto("/accounts/signup/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_label("Team name").fill("E2E Shop")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Mini-programs")).to_be_visible()
    expect(page.get_by_text(email)).to_be_visible()

    # Register a sandbox mini-program → its page.
    page.get_by_role("link", name="Register a mini-program").first.click()
    page.get_by_role("textbox", name="AppID", exact=True).fill(appid)
    page.get_by_label("AppSecret", exact=True).fill(secrets.token_hex(16))
    page.get_by_role("textbox", name="Name", exact=True).fill("E2E 小店")
    page.get_by_role("checkbox", name=re.compile("^Sandbox")).check()
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_text("Mini-program registered.")).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("E2E 小店"))).to_be_visible()
    screenshot(page, "app")

    # Templates → add one by hand (and put it in the sandbox's WeChat account, as the WeChat console would).
    page.get_by_role("link", name="Templates").first.click()
    expect(page.get_by_role("heading", name=re.compile("Templates"))).to_be_visible()
    page.get_by_label("Kind").select_option("subscribe")
    page.get_by_label("Template ID").fill(TEMPLATE_ID)
    page.get_by_label("Title").fill("发货通知")
    page.get_by_label("Fields, one per line as key:name").fill("character_string1:订单号\nthing2:商品")
    page.get_by_role("button", name="Add the template").click()
    sandbox.add_template(
        appid,
        kind="subscribe",
        template_id=TEMPLATE_ID,
        title="发货通知",
        content="订单号:{{character_string1.DATA}}\n商品:{{thing2.DATA}}",
    )

    # The template page: trigger URL, its copy button, the curl example.
    expect(page.get_by_text("Template added.")).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("发货通知"))).to_be_visible()
    trigger = page.locator("#trigger-url")
    trigger_url = trigger.inner_text().strip()
    assert trigger_url.startswith(f"{live_server.url}/t/"), trigger_url
    expect(page.locator("#curl-example")).to_contain_text(trigger_url)
    copy = page.locator('button[data-copy="#trigger-url"]')
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == trigger_url
    template_page = page.url

    # The sandbox phone: a test user, a form submit (a formId), an accept (a subscribe credit).
    page.goto(f"/dashboard/apps/{appid}/phone/")
    page.get_by_role("button", name="Create a test user").click()
    expect(page.get_by_text(re.compile(r"Test user \S+ created\."))).to_be_visible()
    openid = page.get_by_label("User").input_value()
    assert openid
    page.get_by_role("button", name="Submit a form").click()
    expect(page.get_by_text("Form submitted: 1 formId collected.")).to_be_visible()
    page.locator("form", has_text=TEMPLATE_ID).get_by_role("button", name="Accept").click()
    expect(page.get_by_text("Subscription accepted: one subscribe credit.")).to_be_visible()
    expect(page.locator("#inbox")).to_contain_text("No message yet.")

    # Back on the template page: a test send to that user.
    page.goto(template_page)
    send = page.locator("#test-send")
    send.get_by_label("To").fill(openid)
    send.get_by_label("订单号").fill("A20260001")
    send.get_by_label("商品").fill("机械键盘")
    page.locator("h2", has_text="Trigger URL").evaluate("h => h.scrollIntoView()")
    screenshot(page, "template")
    send.get_by_role("button", name="Send", exact=True).click()

    # The push page: the bar fills up (the page reloads itself once the push is done).
    expect(page).to_have_url(re.compile(r"/dashboard/pushes/[^/]+/$"))
    expect(page.locator("#push-status")).to_have_text("done", timeout=DEADLINE)
    expect(page.locator('[data-segment="sent"]')).to_have_attribute(
        "style", re.compile(r"width:\s*100(\.0+)?%"), timeout=DEADLINE
    )
    expect(page.locator('[data-count="sent"]')).to_have_text("1")
    expect(page.locator('[data-count="failed"]')).to_have_text("0")
    screenshot(page, "push")

    # The phone's inbox: a service-notification card with the catalogue's names and the values sent.
    page.goto(f"/dashboard/apps/{appid}/phone/?openid={openid}")
    card = page.locator("#inbox article.wx-card").first
    expect(card.locator("header")).to_have_text("发货通知", timeout=DEADLINE)
    expect(card).to_contain_text("订单号")
    expect(card).to_contain_text("A20260001")
    expect(card).to_contain_text("商品")
    expect(card).to_contain_text("机械键盘")
    screenshot(page, "phone")

    # Quota (charts), API keys, the apps list.
    page.goto(f"/dashboard/apps/{appid}/quota/")
    expect(page.locator("#quota-charts")).to_be_visible()
    page.wait_for_load_state("networkidle")
    screenshot(page, "quota")
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name=re.compile("API keys"))).to_be_visible()
    screenshot(page, "keys")
    page.get_by_role("link", name="Mini-programs").first.click()
    row = page.locator("tr", has_text=appid)
    expect(row).to_contain_text("E2E 小店")
    screenshot(page, "dashboard")

    # 简体中文 from the header's language selector.
    page.get_by_label("Language").select_option(label="简体中文")
    expect(page.get_by_role("heading", name="小程序")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    screenshot(page, "dashboard-zh")

    inline_worker.join()
    # A test send to one user is claimed before the answer and queued straight to its one chunk.
    assert inline_worker.ran == ["deliver_chunk"]
