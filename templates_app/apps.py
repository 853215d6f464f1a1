from django.apps import AppConfig


class TemplatesAppConfig(AppConfig):
    name = "templates_app"
    verbose_name = "Templates and pushes"

    def ready(self) -> None:
        # formids asks "which subscribe templates does this app have?" through this hook, so the
        # dependency keeps pointing templates_app → formids.
        from formids.catalogue import register_subscribe_template_provider
        from templates_app.catalogue import active_subscribe_template_ids

        register_subscribe_template_provider(active_subscribe_template_ids)

        # A pending delivery owns its credit's claim: the stale-claim sweep leaves it alone.
        from formids.services import register_claim_owner
        from templates_app.delivery.ledger import pending_delivery_holds_credit

        register_claim_owner(pending_delivery_holds_credit)

        # The delivery log listens to formids' subscribe_msg_sent_event signal.
        from templates_app import receivers

        receivers.connect()
