"""manage.py rotate_field_key: every secret readable with the new key alone afterwards."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from pushhub import crypto
from templates_app import catalogue
from tenants import services
from tenants.models import MiniProgram
from tests.conftest import random_appid, random_secret
from webhooks import services as webhooks

pytestmark = pytest.mark.django_db


def test_rotation_re_encrypts_every_secret_with_the_new_key(tenant, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    secret = random_secret()
    app = services.register_app(tenant, appid=random_appid(), secret=secret, name="Shop", sandbox_app=True)
    aes_key, identity_secret = app.get_events_aes_key(), app.get_identity_secret()
    template = catalogue.create_template(
        app,
        kind="subscribe",
        template_id="TPL",
        title="通知",
        fields=[{"key": "thing1", "name": "内容"}],
        actor="t",
    )
    token = template.get_trigger_token()
    deleted = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Gone", sandbox_app=True
    )
    services.delete_app(deleted)
    endpoint, signing_secret = webhooks.create_endpoint(tenant, url="https://93.184.216.34/h", events=["*"])

    settings.FIELD_ENCRYPTION_KEYS = [new, old]  # step 1: the new key first, the old one still reads
    out = StringIO()
    call_command("rotate_field_key", stdout=out)
    assert "re-encrypted: 2 mini-programs, 1 templates, 1 webhook endpoints" in out.getvalue()

    settings.FIELD_ENCRYPTION_KEYS = [new]  # step 2: the old key is gone
    app = MiniProgram.objects.get(pk=app.pk)
    assert app.get_secret() == secret and app.get_events_aes_key() == aes_key
    assert app.get_identity_secret() == identity_secret
    template.refresh_from_db()
    assert template.get_trigger_token() == token
    assert catalogue.template_for_trigger_token(token) == template
    endpoint.refresh_from_db()
    assert endpoint.get_secret() == signing_secret


def test_without_rotation_the_old_ciphertexts_fail_loudly(tenant, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    app = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Shop", sandbox_app=True
    )
    settings.FIELD_ENCRYPTION_KEYS = [new]
    with pytest.raises(crypto.DecryptionError):
        MiniProgram.objects.get(pk=app.pk).get_secret()
