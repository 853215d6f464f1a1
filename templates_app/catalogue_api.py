"""/api/v1 template catalogue: list, create, sync from WeChat, read, change, delete, rotate the trigger URL.

Views parse, authorise and format; every change is a verb in ``templates_app.catalogue``.
"""

from __future__ import annotations

import uuid

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from pushhub.api import (
    ApiError,
    RejectUnknownFieldsMixin,
    StrictBooleanField,
    StrictCharField,
    UtcDateTimeField,
)
from templates_app import catalogue
from templates_app.models import Template
from tenants.auth import actor_for
from tenants.models import MiniProgram
from tenants.viewsets import TenantScopedViewSet

# --- serializers ---------------------------------------------------------------------------------
TRACK_OPENS_HELP = (
    "true (default): each sent message's page carries ph=<ref>, and the SDK reports when the user opens the "
    "mini-program from it (counts.opened); false: pages are sent as they are"
)


class StrictChoiceField(serializers.ChoiceField):
    """A choice whose refusal is a plain ``validation_error`` (DRF's own code would leak as the error code)."""

    def to_internal_value(self, data):
        if not isinstance(data, str) or data not in self.choice_strings_to_values:
            raise serializers.ValidationError(
                f"Must be one of {', '.join(self.choice_strings_to_values)}.", code="invalid"
            )
        return self.choice_strings_to_values[data]


class TemplateFieldSerializer(serializers.Serializer):
    key = serializers.CharField(
        help_text="keyword1, keyword2… (formId) or thing1, time2, character_string3… (subscribe: the "
        "letters are the value type)"
    )
    name = serializers.CharField(max_length=20, required=False, allow_blank=True, help_text="the label")


@extend_schema_field(TemplateFieldSerializer(many=True))
class TemplateFieldsField(serializers.JSONField):
    """``[{key, name?}]``, 1..20; checked by ``catalogue.clean_fields`` so the API and the dashboard agree."""


class TemplateSerializer(serializers.Serializer):
    """A template as the API shows it. ``trigger_url`` is the credential for sending: keep it secret."""

    id = serializers.CharField(read_only=True)
    app = serializers.CharField(source="app.appid", read_only=True, help_text="the AppID")
    kind = serializers.ChoiceField(Template.Kind.choices, read_only=True)
    template_id = serializers.CharField(read_only=True, help_text="WeChat's template id")
    title = serializers.CharField(read_only=True)
    fields = TemplateFieldSerializer(many=True, read_only=True, help_text="in content order")
    page = serializers.CharField(read_only=True, help_text="default page opened by the message")
    emphasis_keyword = serializers.CharField(read_only=True, help_text="formId templates: e.g. keyword1.DATA")
    subscription = serializers.SerializerMethodField(
        help_text="subscribe templates: one_time (each accept is one send) or long_term (an accept stands "
        "until the user turns it off; WeChat's type 3); null for formId templates"
    )
    status = serializers.ChoiceField(Template.Status.choices, read_only=True)
    source = serializers.ChoiceField(Template.Source.choices, read_only=True)
    trigger_url = serializers.SerializerMethodField()
    trigger_enabled = serializers.BooleanField(read_only=True)
    track_opens = serializers.BooleanField(read_only=True, help_text=TRACK_OPENS_HELP)
    created_at = UtcDateTimeField(read_only=True)

    def get_trigger_url(self, template: Template) -> str:
        return catalogue.trigger_url(self.context["request"], template)

    @extend_schema_field({"type": "string", "enum": Template.Subscription.values, "nullable": True})
    def get_subscription(self, template: Template) -> str | None:
        if template.kind != Template.Kind.SUBSCRIBE:
            return None
        return template.subscription or Template.Subscription.ONE_TIME


class TemplateCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """A template entered by hand (or use the sync to pull them from WeChat). Answers 201 with its
    ``trigger_url``; 409 ``conflict`` if the app already has this kind and template_id."""

    kind = StrictChoiceField(Template.Kind.choices)
    template_id = StrictCharField(max_length=128, help_text="WeChat's id (priTmplId / template_id)")
    title = StrictCharField(max_length=100)
    fields = TemplateFieldsField()
    page = StrictCharField(required=False, allow_blank=True, max_length=1025)
    emphasis_keyword = StrictCharField(required=False, allow_blank=True, max_length=64)
    subscription = StrictChoiceField(
        Template.Subscription.choices,
        required=False,
        allow_null=True,
        help_text="subscribe templates only: one_time (default) or long_term (WeChat's type 3); a formId "
        "template with a subscription is a 400",
    )
    track_opens = StrictBooleanField(required=False, default=True, help_text=TRACK_OPENS_HELP)


class TemplateUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """Any of these; kind, template_id and subscription cannot change (create another template instead;
    subscription is WeChat's template type, which the sync reads)."""

    title = StrictCharField(max_length=100, required=False)
    fields = TemplateFieldsField(required=False)
    page = StrictCharField(required=False, allow_blank=True, max_length=1025)
    emphasis_keyword = StrictCharField(required=False, allow_blank=True, max_length=64)
    status = StrictChoiceField(
        [Template.Status.ACTIVE, Template.Status.DISABLED],
        required=False,
        help_text="disabled: sends answer 410 template_gone (DELETE removes a template)",
    )
    trigger_enabled = StrictBooleanField(
        required=False, help_text="false: the trigger URL refuses sends (the API still sends)"
    )
    track_opens = StrictBooleanField(required=False, help_text=TRACK_OPENS_HELP)

    def validate(self, attrs):
        # subscription is WeChat's fact about the template: a clear 400 naming it, not "unknown field".
        if isinstance(self.initial_data, dict) and "subscription" in self.initial_data:
            raise catalogue.subscription_is_fixed()
        return super().validate(attrs)


class SyncResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    deleted = serializers.IntegerField(help_text="synced templates WeChat no longer lists")


class TriggerUrlSerializer(serializers.Serializer):
    trigger_url = serializers.CharField()


# --- views ---------------------------------------------------------------------------------------
def _query_choice(request, name: str, choices: list[str]) -> str | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if value not in choices:
        raise ApiError(400, "validation_error", f"{name} must be one of {', '.join(choices)}.", field=name)
    return value


class AppTemplateViewSet(TenantScopedViewSet):
    """/api/v1/apps/{appid}/templates: the app's catalogue."""

    tenant_queryset = MiniProgram.objects.live()
    lookup_field = "appid"
    serializer_class = TemplateSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, enum=Template.Kind.values),
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                enum=Template.Status.values,
                description="deleted templates are listed only with status=deleted",
            ),
        ],
        responses={200: TemplateSerializer(many=True)},
        operation_id="apps_templates_list",
    )
    def list(self, request, appid=None):
        app = self.get_object()
        templates = Template.objects.for_tenant(self.tenant).filter(app=app).select_related("app")
        kind = _query_choice(request, "kind", Template.Kind.values)
        if kind:
            templates = templates.filter(kind=kind)
        wanted_status = _query_choice(request, "status", Template.Status.values)
        templates = templates.filter(status=wanted_status) if wanted_status else templates.visible()
        page = self.paginate_queryset(templates)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        request=TemplateCreateSerializer,
        responses={201: TemplateSerializer},
        operation_id="apps_templates_create",
    )
    def create(self, request, appid=None):
        app = self.get_object()
        data = TemplateCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        template = catalogue.create_template(app, actor=actor_for(request), **data.validated_data)
        return Response(self.get_serializer(template).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: SyncResultSerializer}, operation_id="apps_templates_sync")
    def sync(self, request, appid=None):
        """Pull the app's templates from WeChat: new ones are created, changed ones updated, synced ones
        WeChat no longer lists are marked deleted. Templates entered by hand are left alone."""
        return Response(catalogue.sync_templates(self.get_object(), actor=actor_for(request)))


ID_PARAMETER = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="template id")


class TemplateViewSet(TenantScopedViewSet):
    """/api/v1/templates/{id}: one template (a deleted one is not found)."""

    tenant_queryset = Template.objects.visible().select_related("app")
    serializer_class = TemplateSerializer

    def _template(self, id: uuid.UUID) -> Template:
        template = self.get_queryset().filter(pk=id).first()
        if template is None:
            raise Http404
        return template

    @extend_schema(parameters=[ID_PARAMETER], responses={200: TemplateSerializer})
    def retrieve(self, request, id=None):
        return Response(self.get_serializer(self._template(id)).data)

    @extend_schema(
        parameters=[ID_PARAMETER], request=TemplateUpdateSerializer, responses={200: TemplateSerializer}
    )
    def partial_update(self, request, id=None):
        template = self._template(id)
        data = TemplateUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        template = catalogue.update_template(template, actor=actor_for(request), **data.validated_data)
        return Response(self.get_serializer(template).data)

    @extend_schema(parameters=[ID_PARAMETER], responses={204: None})
    def destroy(self, request, id=None):
        catalogue.delete_template(self._template(id), actor=actor_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[ID_PARAMETER],
        request=None,
        responses={200: TriggerUrlSerializer},
        operation_id="templates_rotate",
    )
    def rotate(self, request, id=None):
        """A new trigger URL; the old one answers 404 at once."""
        template = catalogue.rotate_trigger_url(self._template(id), actor=actor_for(request))
        return Response({"trigger_url": catalogue.trigger_url(request, template)})
