"""The delivery pipeline: a queued push becomes chunk tasks, each chunk sends through WeChat.

Where each part lives (the Celery tasks in ``templates_app.tasks`` call the first three):

- ``start``: ``deliver_push`` enumerates the recipients (``@all``: the app's users holding a usable credit,
  in id order) and fans them out as ``deliver_chunk`` tasks, so every worker shares a broadcast.
- ``chunk``: ``deliver_chunk`` sends a chunk with bounded concurrency under a per-app rate limit, retries
  transient failures with backoff and tries the user's next formId after 41028/41029.
- ``sweeps`` (beat): start scheduled pushes that are due, resume pushes whose workers died.
- ``send_pool``: the per-app send-rate limiter, the WeChat message of a push, the pool of sends in flight.
- ``outcomes``: what an answer from WeChat means for the delivery and its credit (pure; the table).
- ``ledger``: every write of the pipeline: the guarded attempt mark, outcomes with their counters and
  credit settlements, the push's end, WeChat's subscribe_msg_sent_event.
- ``job``: a delivery being sent by this run, and a chunk's tally.
- ``queue``: the one place that queues the pipeline's tasks. ``progress``: heartbeats, cursors and the
  enumeration lock in the shared cache. ``timing``: leases, budgets and backoff from the settings.

Everything here runs under at-least-once delivery (``acks_late``, redelivered chunks, duplicate chunks from
the stall sweep). What keeps it exactly-once towards WeChat:

- A delivery is sent only by the run whose guarded mark took it (``attempts`` n → n+1 while still
  ``pending`` with n attempts, errcode cleared), committed before the request leaves. Another run that read
  the same row finds its mark refused and leaves it alone.
- ``pending`` + ``attempts > 0`` + empty ``errcode`` means "an attempt started and its outcome is not
  recorded": in flight (touched less than DELIVERY_IN_FLIGHT_LEASE ago: wait for it), or its worker died.
  A dead attempt with a formId is sent again (WeChat answers 41029 if the first one went through, which we
  count as sent); with a subscribe credit or a prepay_id (several uses) it is never repeated blindly: failed
  ``timeout_ambiguous``, the credit spent. A transient answer (-1, 45011, connect error) records its errcode,
  so a retry is never mistaken for a lost attempt.
- Outcomes are written only for rows still ``pending`` with the attempts this run committed, together with the
  counters and the credits' consume/release, so a counter never moves twice for one delivery.
"""
