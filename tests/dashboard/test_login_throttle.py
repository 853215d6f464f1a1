"""Dashboard sign-in: brute-force protection per account and per address (tenants/login.py)."""

from __future__ import annotations

import pytest
from django.test import Client

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db

EMAIL = "owner@acme.test"


def sign_in(client: Client, email: str, password: str, address: str = "10.0.0.1"):
    return client.post("/accounts/login/", {"username": email, "password": password}, REMOTE_ADDR=address)


def test_an_account_is_locked_after_five_failures_even_for_the_right_password(tenant, settings):
    client = Client()
    for _ in range(5):
        assert sign_in(client, EMAIL, "wrong").status_code == 200  # the form again, with its error
    locked = sign_in(client, EMAIL, PASSWORD)

    assert locked.status_code == 429
    assert 1 <= int(locked["Retry-After"]) <= settings.LOGIN_FAILURE_WINDOW
    assert "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session  # not signed in
    # The lock is the account's, typed in any case, from any address.
    assert sign_in(Client(), EMAIL.upper(), PASSWORD, address="10.9.9.9").status_code == 429


def test_other_accounts_from_the_same_address_still_sign_in(tenant, other_tenant):
    for _ in range(5):
        sign_in(Client(), EMAIL, "wrong")
    other = sign_in(Client(), "owner@globex.test", PASSWORD)
    assert other.status_code == 302  # signed in, redirected to the dashboard


def test_one_address_trying_many_accounts_is_locked(tenant, settings):
    settings.LOGIN_FAILURES_PER_IP = 3
    for n in range(3):
        assert sign_in(Client(), f"nobody{n}@acme.test", "guess").status_code == 200
    assert sign_in(Client(), EMAIL, PASSWORD).status_code == 429
    assert sign_in(Client(), EMAIL, PASSWORD, address="10.0.0.2").status_code == 302


def test_a_successful_sign_in_is_not_counted(tenant):
    for _ in range(6):
        assert sign_in(Client(), EMAIL, PASSWORD).status_code == 302


def test_the_lock_message_is_translated(tenant):
    for _ in range(5):
        sign_in(Client(), EMAIL, "wrong")
    locked = Client().post(
        "/accounts/login/", {"username": EMAIL, "password": PASSWORD}, REMOTE_ADDR="10.0.0.1",
        HTTP_ACCEPT_LANGUAGE="zh-hans",
    )  # fmt: skip
    assert locked.status_code == 429 and "登录失败次数过多" in locked.content.decode()
