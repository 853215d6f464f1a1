"""Request and response shapes of /sdk/v1/{appid}/… (../shared/API.md "SDK").

Input errors use DRF's generic codes only, so the exception handler answers ``validation_error`` with the
input at fault in ``field`` (e.g. ``formids`` or ``results.TEMPLATE_ID``).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from formids.models import Credit
from pushhub.api import RejectUnknownFieldsMixin, StrictBooleanField, StrictCharField

MAX_IDS_PER_CALL = 100
MAX_SUBSCRIBE_RESULTS = 50
SUBSCRIBE_ANSWERS = ("accept", "reject", "ban", "filter")
MAX_TEMPLATE_ID_LENGTH = Credit._meta.get_field("template_id").max_length


# --- login -----------------------------------------------------------------------------------------
class SdkLoginSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    code = StrictCharField(min_length=1, max_length=128, help_text="the code from wx.login()")


class SdkSessionSerializer(serializers.Serializer):
    session = serializers.CharField(help_text="send as `Authorization: Session <session>`")
    openid = serializers.CharField()
    expires_at = serializers.DateTimeField(help_text="UTC ISO-8601; log in again before then")


# --- formIds -----------------------------------------------------------------------------------------
@extend_schema_field(
    {
        "type": "array",
        # Items are not constrained here: one that cannot be an id (not a string, too long, malformed) is
        # answered in `rejected` with a reason, and the rest of the upload is still taken.
        "items": {"description": "a formId / prepay_id string"},
        "minItems": 1,
        "maxItems": MAX_IDS_PER_CALL,
    }
)
class IdListField(serializers.Field):
    """A JSON list of 1..100 items, passed on as they are: an item that cannot be an id (not a string,
    the developer tools' mock formId, malformed) is rejected on its own with a reason, the rest are taken."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("Must be a list of strings.", code="invalid")
        if not data:
            raise serializers.ValidationError("Send at least one id.", code="invalid")
        if len(data) > MAX_IDS_PER_CALL:
            raise serializers.ValidationError(
                f"At most {MAX_IDS_PER_CALL} ids per call; split the upload.", code="invalid"
            )
        return data

    def to_representation(self, value):
        return value


class SdkFormidsSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    formids = IdListField(required=False, help_text="formIds from `<form report-submit>` (1 send each)")
    prepay_ids = IdListField(required=False, help_text="prepay_ids of WeChat Pay orders (3 sends each)")

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if not attrs:
            raise serializers.ValidationError("Send formids and/or prepay_ids.", code="invalid")
        return attrs


def is_plain_id_upload(data) -> bool:
    """``data`` is what SdkFormidsSerializer takes as it is: an object of ``formids`` and/or ``prepay_ids``,
    each a list of 1..MAX_IDS_PER_CALL items, and nothing else. Checked first on every upload: building the
    serializer was a sixth of an upload's CPU, and it only ever gives back such an object."""
    return (
        isinstance(data, dict)
        and 0 < len(data) <= 2
        and all(
            name in ("formids", "prepay_ids") and type(ids) is list and 0 < len(ids) <= MAX_IDS_PER_CALL
            for name, ids in data.items()
        )
    )


class SdkRejectedIdSerializer(serializers.Serializer):
    formid = serializers.CharField(help_text="the value as sent (non-strings: their repr)")
    reason = serializers.CharField(help_text="not_a_string, mock_formid (developer tools) or malformed")


class SdkIntakeSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="new credits stored")
    duplicates = serializers.IntegerField(
        help_text="already known (or repeated in the call): not stored again"
    )
    rejected = SdkRejectedIdSerializer(many=True)


# --- subscriptions -------------------------------------------------------------------------------------
@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "enum": list(SUBSCRIBE_ANSWERS)},
        "minProperties": 1,
        "maxProperties": MAX_SUBSCRIBE_RESULTS,
        "example": {"TEMPLATE_ID": "accept"},
    }
)
class SubscribeResultsField(serializers.Field):
    """wx.requestSubscribeMessage's answers: template id → accept | reject | ban | filter."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                "Must be an object mapping template ids to 'accept', 'reject', 'ban' or 'filter'.",
                code="invalid",
            )
        if not 1 <= len(data) <= MAX_SUBSCRIBE_RESULTS:
            raise serializers.ValidationError(
                f"Report 1 to {MAX_SUBSCRIBE_RESULTS} template ids per call.", code="invalid"
            )
        for template_id, answer in data.items():
            if not 1 <= len(template_id) <= MAX_TEMPLATE_ID_LENGTH:
                raise serializers.ValidationError(
                    f"Template ids are 1 to {MAX_TEMPLATE_ID_LENGTH} characters.", code="invalid"
                )
            if not isinstance(answer, str) or answer not in SUBSCRIBE_ANSWERS:
                raise serializers.ValidationError(
                    {template_id: ["Must be 'accept', 'reject', 'ban' or 'filter'."]}, code="invalid"
                )
        return data

    def to_representation(self, value):
        return value


class SdkSubscriptionsSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    results = SubscribeResultsField()


class SdkSubscriptionsResultSerializer(serializers.Serializer):
    credited = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="sends credited per template id (empty when the app's credit_source is 'events'); for a "
        "long-term template 1: the user is a standing subscriber (a second accept makes no second one)",
    )
    ignored = serializers.ListField(
        child=serializers.CharField(), help_text="template ids that are not this app's subscribe templates"
    )


# --- me and settings -----------------------------------------------------------------------------------
class SdkMeSerializer(serializers.Serializer):
    openid = serializers.CharField()
    push_enabled = serializers.BooleanField()
    formid_credits = serializers.IntegerField(help_text="usable formId/prepay_id sends")
    subscribe_credits = serializers.DictField(
        child=serializers.IntegerField(), help_text="usable sends per one-time subscribe template id"
    )
    long_term = serializers.ListField(
        child=serializers.CharField(),
        help_text="long-term template ids this user stands subscribed to (sends do not use them up), sorted",
    )
    next_expiry = serializers.DateTimeField(
        allow_null=True,
        help_text=(
            "UTC ISO-8601: when the soonest-expiring usable formId/prepay_id expires (PushHub stops "
            "handing it out FORMID_EXPIRY_MARGIN before that)"
        ),
    )


# --- identify ------------------------------------------------------------------------------------------
@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 128, "nullable": True})
class SdkAliasField(serializers.Field):
    """Passed on as sent: formids.audience checks it (the one home of the alias rules)."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


class SdkIdentifySerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """An alias with the tenant server's user_hash, or a null alias (unbind)."""

    alias = SdkAliasField(
        allow_null=True,
        help_text="the tenant's own id for this user (1-128 printable characters), or null to unbind",
    )
    user_hash = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,  # an empty hash is a missing one: 403 invalid_user_hash, not a 400
        trim_whitespace=False,
        help_text="lowercase hex HMAC-SHA256(key = the app's identity_secret, message = alias), both UTF-8, "
        "computed by the tenant's server; not needed to unbind",
    )


class SdkIdentifyResultSerializer(serializers.Serializer):
    alias = serializers.CharField(allow_null=True, help_text="the alias now bound to this user, or null")


class SdkSettingsSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    push_enabled = StrictBooleanField(
        help_text="false: this user gets no pushes unless a trigger forces them"
    )


class SdkSettingsResultSerializer(serializers.Serializer):
    push_enabled = serializers.BooleanField()
