"""Pushes, the request side: what a send request is and who it reaches, starting and cancelling a push,
and the push as the API shows it. The workers' side is ``templates_app.delivery``.

- ``request``: the send body, validated against the template (``parse_send_request``).
- ``addressing``: its ``to`` (openids, aliases, a tag segment, ``@all``; ``to=@tag:vip`` in form bodies).
- ``recipients``: the users a push can reach (``users_with_credit``, ``in_segment``), the dry run,
  ``prepare_listed`` / ``prepare_recipients``.
- ``start``: ``start_push`` (with Idempotency-Key replays) and ``cancel_push``.
- ``endpoint``: what the trigger URL, the API and the dashboard's test send share (``send``).
- ``payloads``: a push and a delivery as JSON.
"""
