"""The dashboard personas, each with a browser session of its own: the owner of tenant Acme, a viewer of
Acme, and the owner of another tenant (Globex), who must never see or change Acme's things."""

from __future__ import annotations

import pytest
from django.test import Client

PASSWORD = "correct horse battery"  # the password tests/conftest.py gives these users


def signed_in(email: str) -> Client:
    client = Client()
    assert client.login(username=email, password=PASSWORD)
    return client


@pytest.fixture
def owner_client(tenant) -> Client:
    return signed_in("owner@acme.test")


@pytest.fixture
def viewer_client(viewer) -> Client:
    return signed_in("viewer@acme.test")


@pytest.fixture
def outsider_client(other_tenant) -> Client:
    return signed_in("owner@globex.test")


# Short names used by the app and template page tests.
owner = owner_client
outsider = outsider_client
