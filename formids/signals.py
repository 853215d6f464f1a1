"""Signals formids sends for apps that depend on it (dependencies point templates_app → formids).

``subscribe_message_sent``: WeChat reported the final outcome of a subscribe send
(``subscribe_msg_sent_event``), one signal per item. Sent with ``sender=MiniProgram`` and the keyword
arguments ``app`` (MiniProgram), ``openid`` (str), ``template_id`` (str), ``msgid`` (int: the ``msgid``
subscribe/send answered), ``errcode`` (int, 0 = delivered) and ``errstatus`` (str, e.g. "success").

It is sent inside the transaction that stores the event, once per stored event (a retried push is
deduplicated before it): a receiver's writes commit or roll back with it, and a receiver that raises makes
the push fail (HTTP 500, nothing stored) so that WeChat retries it. WeChat may push the event before the
sender has recorded the msgid (the sandbox always does): the InboundEvent keeps ``msgid`` in its payload
items for a later reconciliation.
"""

from django.dispatch import Signal

subscribe_message_sent = Signal()
