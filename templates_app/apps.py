from django.apps import AppConfig


class TemplatesAppConfig(AppConfig):
    name = "templates_app"
    verbose_name = "Templates and pushes"

    def ready(self) -> None:
        # templates_app plugs into formids through formids.hooks only, so the dependency keeps pointing
        # templates_app → formids.
        from formids.hooks import (
            register_claim_owner,
            register_credit_arrival_listener,
            register_credit_arrival_probe,
            register_subscribe_template_provider,
        )
        from templates_app import receivers
        from templates_app.catalogue import subscribe_templates
        from templates_app.delivery.holds import credits_arrived, waiting_for_credit_sql
        from templates_app.delivery.ledger import pending_delivery_holds_credit

        # formids asks "which subscribe templates does this app have?"
        register_subscribe_template_provider(subscribe_templates)
        # A pending delivery owns its credit's claim: the stale-claim sweep leaves it alone.
        register_claim_owner(pending_delivery_holds_credit)
        # Held deliveries wait for their users' next credit.
        register_credit_arrival_listener(credits_arrived)
        register_credit_arrival_probe(waiting_for_credit_sql())
        # The delivery log listens to formids' subscribe_message_sent signal (subscribe_msg_sent_event).
        receivers.connect()
