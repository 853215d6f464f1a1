"""`make run`'s demo: a tenant, a login, an API key, a sandbox app with templates and test users.

Idempotent: running it again keeps the data and prints a fresh API key (keys are never stored in clear).
"""

import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from formids import services as credit_services
from pushhub.wechat.rules import parse_template_fields
from pushhub.wechat.sandbox import services as sandbox
from templates_app import catalogue
from templates_app.models import Template
from tenants import services
from tenants.models import MiniProgram, Tenant

DEMO_SLUG = "demo"
DEMO_EMAIL = "demo@pushhub.local"
DEMO_PASSWORD = "pushhub-demo"
DEMO_APPID = "wxdeadbeef00000001"
DEMO_SECRET = "0123456789abcdef0123456789abcdef"
DEMO_TEMPLATES = [
    {
        "kind": "subscribe",
        "template_id": "demo-order-shipped-subscribe-tmpl01",
        "title": "订单发货通知",
        "content": "订单号:{{character_string1.DATA}}\n商品名称:{{thing2.DATA}}\n发货时间:{{time3.DATA}}\n",
        "example": "订单号:A20261124001\n商品名称:机械键盘\n发货时间:2026年11月24日 15:01\n",
        "type": 2,
    },
    {
        # Long-term (WeChat's type 3, for some public-service categories): one accept, many sends.
        "kind": "subscribe",
        "template_id": "demo-appointment-reminder-longterm-01",
        "title": "预约提醒",
        "content": "预约项目:{{thing1.DATA}}\n预约时间:{{time2.DATA}}\n",
        "example": "预约项目:体检\n预约时间:2026年11月24日 15:01\n",
        "type": 3,
    },
    {
        "kind": "formid",
        "template_id": "demo-payment-success-formid-tmpl0001",
        "title": "支付成功通知",
        "content": "订单号{{keyword1.DATA}}\n金额{{keyword2.DATA}}\n支付时间{{keyword3.DATA}}\n",
        "example": "订单号A123\n金额¥99.00\n支付时间2026-11-24 15:01\n",
    },
]
DEMO_USERS = ["oDemoUser000000000000000001", "oDemoUser000000000000000002", "oDemoUser000000000000000003"]


class Command(BaseCommand):
    help = "Load the demo tenant (login, API key, sandbox mini-program, templates, test users)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="where the printed URLs point"
        )

    def handle(self, base_url, **options):
        if settings.PRODUCTION:
            raise CommandError(
                "load_demo creates a known password; it does not run with PUSHHUB_ENV=production"
            )
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
        if tenant is None:
            tenant = services.create_tenant("Demo", DEMO_EMAIL, password=DEMO_PASSWORD, slug=DEMO_SLUG).tenant
        user = get_user_model().objects.get(email=DEMO_EMAIL)
        if not user.is_staff:  # lets the demo owner look around the Django admin too
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])

        app = MiniProgram.objects.live().filter(appid=DEMO_APPID).first()
        if app is None:
            app = services.register_app(
                tenant,
                appid=DEMO_APPID,
                secret=DEMO_SECRET,
                name="Demo shop (sandbox)",
                sandbox_app=True,
                actor="system:load_demo",
            )
        else:
            sandbox.register_app(DEMO_APPID, app.get_secret())
        existing = {t.template_id for t in sandbox.list_templates(DEMO_APPID)}
        for template in DEMO_TEMPLATES:
            if template["template_id"] not in existing:
                sandbox.add_template(DEMO_APPID, **template)
        # What a sync would give (the web server that serves the sandbox is not up yet to sync over HTTP).
        catalogued = set(Template.objects.filter(app=app).visible().values_list("template_id", flat=True))
        for template in DEMO_TEMPLATES:
            if template["template_id"] not in catalogued:
                catalogue.create_template(
                    app,
                    kind=template["kind"],
                    template_id=template["template_id"],
                    title=template["title"],
                    fields=parse_template_fields(template["content"]),
                    subscription=catalogue.subscription_for_type(template["type"])
                    if template["kind"] == Template.Kind.SUBSCRIBE
                    else None,
                    page="pages/index/index",
                    source=Template.Source.SYNCED,
                    actor="system:load_demo",
                )
        subscribe_template = DEMO_TEMPLATES[0]["template_id"]
        long_term_template = DEMO_TEMPLATES[1]["template_id"]
        # The web server is not up yet: seed without the sandbox pushing events to it, then reconnect.
        sandbox.configure_events(DEMO_APPID, url="", token="", aes_key="")
        for openid in DEMO_USERS:
            sandbox.create_user(DEMO_APPID, openid=openid)
            user = credit_services.touch_user(app, openid)
            if not user.credits.exists():
                # As if the user had tapped three forms and accepted the subscription once: WeChat (the
                # sandbox) issues the credits, and the SDK reports them to us.
                formids = sandbox.issue_formids(DEMO_APPID, openid, count=3)
                credit_services.add_formids(app, user, formids)
                sandbox.accept_subscriptions(DEMO_APPID, openid, {subscribe_template: "accept"})
                credit_services.add_subscribe_credits(app, user, [subscribe_template], source="sdk")
            if openid == DEMO_USERS[0]:
                # The first user also stands subscribed to the long-term template (idempotent).
                sandbox.accept_subscriptions(DEMO_APPID, openid, {long_term_template: "accept"})
                credit_services.start_long_term(app, user, [long_term_template], source="sdk")
        services.connect_sandbox_events(app)

        _, write_key = services.create_api_key(
            tenant, "write", name="make run demo", actor="system:load_demo"
        )
        self.stdout.write(self.style.SUCCESS("Demo tenant ready"))
        self.stdout.write(
            f"  dashboard:    {base_url}{reverse('dashboard')}   login {DEMO_EMAIL} / {DEMO_PASSWORD}"
        )
        self.stdout.write(f"  API docs:     {base_url}{reverse('swagger-ui')}")
        self.stdout.write(f"  API key:      {write_key}   (write scope; shown once)")
        self.stdout.write(f"  sandbox app:  {DEMO_APPID} (test users: {', '.join(DEMO_USERS)})")
        self.stdout.write(
            f"  quota:        curl -H 'Authorization: Bearer {write_key}' {base_url}{reverse('api-app-quota', args=[DEMO_APPID])}"
        )
        self.stdout.write(
            f"  try:          curl -H 'Authorization: Bearer {write_key}' {base_url}{reverse('api-app-list')}"
        )
        trigger = Template.objects.get(app=app, template_id=subscribe_template, status=Template.Status.ACTIVE)
        example = {
            "to": DEMO_USERS[0],
            "data": {"character_string1": "A123", "thing2": "机械键盘", "time3": "15:01"},
        }
        self.stdout.write(f"  send:         curl -X POST {base_url}{trigger.trigger_path} \\")
        self.stdout.write(
            f"                  -H 'Content-Type: application/json' -d '{json.dumps(example, ensure_ascii=False)}'"
        )
        self.stdout.write(
            f"  inbox:        {base_url}{reverse('sandbox:control_inbox', args=[DEMO_APPID])}?openid={DEMO_USERS[0]}"
        )
