"""Re-encrypt every secret stored at rest with the newest FIELD_ENCRYPTION_KEY.

Rotation: put the new key first in FIELD_ENCRYPTION_KEY (new,old), restart, run this command, then drop
the old key. Until it finishes every key still decrypts, so nothing stops working meanwhile. It lives in
templates_app because it touches every app's secrets (dependencies point templates_app → tenants).
"""

from django.core.management.base import BaseCommand
from django.db import transaction

from pushhub import crypto
from templates_app.models import Template
from tenants.models import MiniProgram
from webhooks.models import WebhookEndpoint

BATCH = 500


class Command(BaseCommand):
    help = (
        "Re-encrypt AppSecrets, EncodingAESKeys, identity secrets, trigger-URL tokens and webhook signing "
        "secrets with the first FIELD_ENCRYPTION_KEY."
    )

    def handle(self, **options):
        apps = self._rotate(
            MiniProgram, ["secret_ciphertext", "events_aes_key_ciphertext", "identity_secret_ciphertext"]
        )
        templates = self._rotate(Template, ["trigger_token_ciphertext"])
        webhooks = self._rotate(WebhookEndpoint, ["secret_ciphertext"])
        self.stdout.write(
            f"re-encrypted: {apps} mini-programs, {templates} templates, {webhooks} webhook endpoints"
        )

    def _rotate(self, model, fields: list[str]) -> int:
        done, last_pk = 0, None
        while True:
            rows = model.objects.order_by("pk")
            if last_pk is not None:
                rows = rows.filter(pk__gt=last_pk)
            batch = list(rows.only("pk", *fields)[:BATCH])
            if not batch:
                return done
            with transaction.atomic():
                for row in batch:
                    for field in fields:
                        value = getattr(row, field)
                        if value:  # a deleted app's secret is wiped: nothing to re-encrypt
                            setattr(row, field, crypto.rotate(value))
                model.objects.bulk_update(batch, fields)
            done += len(batch)
            last_pk = batch[-1].pk
