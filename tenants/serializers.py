from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pushhub.api import (
    RejectUnknownFieldsMixin,
    StrictBooleanField,
    StrictCharField,
    UtcDateTimeField,
    absolute_url,
)
from tenants.models import MiniProgram


class AppSerializer(serializers.ModelSerializer):
    """A mini-program as the API shows it. The AppSecret never appears: only ``secret_hint``."""

    secret_hint = serializers.CharField(read_only=True)
    events_url = serializers.SerializerMethodField()
    events_aes_key = serializers.SerializerMethodField()
    identity_secret = serializers.SerializerMethodField(
        help_text="the key of the SDK identify's user_hash (HMAC-SHA256 of the alias); null for read keys"
    )
    created_at = UtcDateTimeField(read_only=True)

    class Meta:
        model = MiniProgram
        fields = [
            "appid",
            "name",
            "sandbox",
            "secret_hint",
            "events_url",
            "events_token",
            "events_aes_key",
            "credit_source",
            "inbox_enabled",
            "identity_secret",
            "created_at",
        ]
        read_only_fields = fields

    def get_events_url(self, app: MiniProgram) -> str:
        return absolute_url(self.context["request"], app.events_path)

    def get_events_aes_key(self, app: MiniProgram) -> str:
        return app.get_events_aes_key()

    @extend_schema_field({"type": "string", "nullable": True})
    def get_identity_secret(self, app: MiniProgram) -> str | None:
        """Only a write key sees it: with it anyone can bind any alias, and so receive its messages."""
        key = getattr(self.context["request"], "auth", None)
        if not getattr(key, "can_write", False) or not app.identity_secret_ciphertext:
            return None
        return app.get_identity_secret()


class AppCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    appid = StrictCharField(max_length=64)
    secret = StrictCharField(max_length=128, trim_whitespace=False)
    name = StrictCharField(max_length=100)
    sandbox = StrictBooleanField(required=False, default=False)


class AppUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = StrictCharField(max_length=100, required=False)
    secret = StrictCharField(max_length=128, required=False, trim_whitespace=False)
    sandbox = StrictBooleanField(required=False)
    credit_source = serializers.ChoiceField(choices=MiniProgram.CreditSource.choices, required=False)
    inbox_enabled = StrictBooleanField(
        required=False, help_text="the SDK's in-app inbox (false: /sdk/v1/{appid}/inbox answers 404)"
    )


class IdentitySecretSerializer(serializers.Serializer):
    identity_secret = serializers.CharField(help_text="the new secret; the old one no longer verifies")


class AccessTokenSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    expires_at = serializers.CharField(help_text="UTC ISO-8601")
