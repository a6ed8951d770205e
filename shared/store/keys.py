"""The Redis layout: every key the service writes, in one table.

One Redis (no cluster): scripts may touch any key. All names start with ``payments:`` except the
queue lists (``QUEUE_NAME`` and its client queues) and kombu's own ``unacked``/``unacked_index``,
which the Celery transport owns.

Key (type; TTL; written by):
- ``payments:record:{payment_id}`` (hash, the payment record; RECORD_TTL_SECONDS; the API on
  accept, workers on each attempt and outcome, the sweep, replay and the reconciler). Its
  existence is the claim of the client's Idempotency-Key: the id derives from that key.
- ``payments:lock:{payment_id}`` (string, the lease of the worker charging it; 2 x Stripe
  timeout + 10 s, heartbeated while waiting for the Stripe budget; workers).
- ``payments:pending`` (sorted set of payments not final, scored by when the sweep looks again;
  no TTL, members leave when final; API, workers, sweep, replay).
- ``payments:unknown`` (sorted set of payments whose outcome could not be learned, scored by the
  next check; workers, reconciler).
- ``payments:dead_letters`` (sorted set of payments failed because Stripe was down, by time;
  workers, reconciler, replay).
- ``payments:events`` (pub/sub channel: a payment id when its status settles; workers).
- ``payments:stripe_budget`` (hash, the fleet's Stripe budget: for the account's limit,
  ``global``, and each endpoint, ``next|<name>`` its next free slot in µs of Redis' clock, and
  after a 429 ``rate|<name>``/``cut|<name>`` the rate it was cut to and when; none; workers
  and the API, in book_stripe and stripe_throttled). ``payments:metrics:stripe_budget`` (hash,
  ``booked|<name>`` and ``rate_limited|<name>`` counts for ``/metrics``; the same scripts).
- ``payments:maintenance`` (string, one worker's turn at the maintenance round; the round).
- ``payments:client:customers:{client}`` (set of customer ids for which a payment of the client
  has succeeded: it may list their charges; the record TTL, renewed by each success; workers,
  in the steps that move a payment into succeeded: finish, transition).
  ``payments:client:rate:{client}`` (hash, the client's token bucket; until full again; API).
  ``payments:client:backlog:{client}`` (counter of the client's pending payments; none; API on
  accept and replay, workers when a payment leaves pending).
- ``payments:metrics:worker_heartbeat`` (string, when a worker's maintenance round last ran;
  workers).
- ``payments:metrics:clients`` (hash ``client|accepted`` / ``client|limited`` -> count; API).
- ``payments:metrics:accepted`` (counter; API), ``payments:metrics:outcomes`` (hash
  ``status|code`` -> count; workers), ``payments:metrics:stripe`` (hash ``call|outcome|le`` ->
  count, ``call|outcome|sum`` -> seconds; workers).
- ``payments:fence`` (counter; API and workers, only with REDIS_MIN_REPLICAS > 0): written
  just before a ``WAIT`` on the same connection, so the ``WAIT`` covers every earlier write,
  also when the step itself wrote nothing (a replay, an outcome already recorded).
- ``payments:stripe_event:{event_id}`` (string, a Stripe webhook event seen; 3 days, Stripe's
  retry horizon; API, in the script that enqueues the event's task).
- ``payments:stripe_events:turn`` (string, the token of the worker whose turn it is at the
  catch-up round of Stripe's events; STRIPE_EVENTS_CATCHUP_SECONDS, renewed as it reads;
  workers) and ``payments:stripe_events:cursor`` (hash: ``through``, events created before it
  were read; ``window_end`` and ``after``, the window being read and the last event id read in
  it; none; workers).
- ``payments:refund:{refund_id}`` (hash, a refund; RECORD_TTL_SECONDS; API on accept, workers)
  and ``payments:refunds:{payment_id}`` (list of the payment's refund ids, oldest first; same
  TTL; API). A refund's lease is ``payments:lock:{refund_id}``, a callback attempt's
  ``payments:lock:{event_id}`` (CALLBACK_TIMEOUT_SECONDS + 30 s; workers), a capture's or
  void's ``payments:lock:{payment_id}:capture`` (as a refund's).
- ``payments:captures_unknown`` (sorted set: payments whose capture or void has an unknown
  outcome, by next check; workers) and ``payments:captures_pending`` (sorted set: captures and
  voids asked and not settled, by the recovery sweep's next look; API, workers).
- ``payments:awaiting_action`` (sorted set of payments waiting for their customer, 3-D
  Secure, by next re-check at Stripe; workers: the charge path's outcome and the lifecycle
  moves add, the re-check round removes).
- ``payments:refunds_pending`` (sorted set of refunds not settled yet, by when the recovery
  sweep looks again; API on accept, workers).
- ``payments:refunds_unknown`` (sorted set of refunds whose outcome Stripe could not be asked
  about, by next check; workers).
- ``payments:metrics:transitions`` (hash ``from|to`` -> count: moves after the first answer;
  workers), ``payments:metrics:webhooks`` (hash ``type|outcome`` -> count; API and workers),
  ``payments:metrics:callbacks`` (hash ``outcome`` -> count; workers).
- ``payments:callback_dead_letters`` (sorted set of callback event ids whose retries ran out,
  by time; workers, replay) and ``payments:callback:{event_id}`` (hash; RECORD_TTL_SECONDS:
  while the callback's message is out, ``message``, ``enqueued_at`` (ms) and ``alive_at``
  (ms, an attempt began), written by the script that pushes it and removed when it leaves
  the pending set; for a dead letter, what replays it: type, payment, endpoint, attempts).
- ``payments:callbacks_pending`` (sorted set of callback event ids whose message is in the
  callback queue or with a worker, by when the callbacks' recovery sweep looks again; filed
  by every script that pushes a callback message, left when it is delivered, skipped,
  dead-lettered or held in ``payments:callback_retries``; workers, the sweep).
- ``payments:callback_retries`` (sorted set of callback task messages waiting for their next
  attempt, by due time; workers, moved back to the callback queue by the maintenance round).
- ``{CALLBACK_QUEUE}`` (``callbacks``: list of callback task messages, pushed by the same
  script that changes the state; workers consume it besides ``{QUEUE_NAME}``).
- ``{QUEUE_NAME}.{client}`` (one client's charges: a list of Celery protocol-2 messages,
  stamped ``enqueued_at``; API on accept, sweep, replay, Celery retries; the record's ``queue``
  field names it) and ``{QUEUE_NAME}`` (refunds, Stripe events, and charges enqueued before
  charges had a queue a client). Workers take from the client queues in weighted turns
  (``worker.fair_queues``).
- ``payments:queues`` (set of the client queues ever used; no TTL; API on accept, in the same
  script as the push): how workers learn of a new client's queue, and what the queue depth
  counts.
- ``payments:deadlines`` (sorted set of payments accepted with a deadline, scored by it in ms;
  no TTL; API on accept, in the same script as the push; workers: the maintenance round
  expires the due ones still queued and drops the others): so that a backlog never hides an
  expiry.
- ``payments:client:listed:{client}`` (sorted set of the client's payment ids scored by
  their creation in ms: GET /payments; the API on accept, in the same script, trimmed there of
  entries past RECORD_TTL_SECONDS, its TTL RECORD_TTL_SECONDS from the client's last accept),
  ``payments:client:status:{client}:{status}`` (the same, one set a status: every script that
  moves a status moves the entry, in the same step, lib/common.lua ``index_move``; trimmed at
  accept in turns, its TTL the listed set's) and ``payments:client:customer:{client}:{customer}``
  (the same, the client's payments for one customer; API on accept, trimmed and expiring there).
- ``payments:list_backfill`` (hash: ``cursor``, the SCAN cursor of the records not yet looked
  at, and ``done``, the time the last was; no TTL; workers, the maintenance round
  ``list_backfill``): the filing in the lists above of payments whose records were written
  before the accept kept them (``shared.store.list_store.ListBackfill``), once a deployment.
- kombu's ``unacked`` / ``unacked_index`` (delivered messages not yet acknowledged; kombu,
  and a waiting worker moves its own entry's time forward).
"""

from __future__ import annotations

RECORD_PREFIX = "payments:record:"
LOCK_PREFIX = "payments:lock:"
PENDING_INDEX = "payments:pending"
UNKNOWN_INDEX = "payments:unknown"
DEAD_LETTERS = "payments:dead_letters"
EVENTS_CHANNEL = "payments:events"
STRIPE_BUDGET = "payments:stripe_budget"
STRIPE_BUDGET_COUNTS = "payments:metrics:stripe_budget"
MAINTENANCE_LOCK = "payments:maintenance"
ACCEPTED_COUNT = "payments:metrics:accepted"
OUTCOME_COUNTS = "payments:metrics:outcomes"
STRIPE_CALL_STATS = "payments:metrics:stripe"
DURABILITY_FENCE = "payments:fence"
STRIPE_EVENT_PREFIX = "payments:stripe_event:"
STRIPE_EVENT_TTL_SECONDS = 3 * 24 * 3600
STRIPE_EVENTS_TURN = "payments:stripe_events:turn"
STRIPE_EVENTS_CURSOR = "payments:stripe_events:cursor"
REFUND_PREFIX = "payments:refund:"
REFUNDS_PREFIX = "payments:refunds:"
REFUNDS_UNKNOWN = "payments:refunds_unknown"
REFUNDS_PENDING = "payments:refunds_pending"
AWAITING_ACTION = "payments:awaiting_action"
CAPTURES_UNKNOWN = "payments:captures_unknown"
CAPTURES_PENDING = "payments:captures_pending"
TRANSITION_COUNTS = "payments:metrics:transitions"
WEBHOOK_COUNTS = "payments:metrics:webhooks"
CALLBACK_COUNTS = "payments:metrics:callbacks"
CALLBACK_PREFIX = "payments:callback:"
CALLBACK_DEAD_LETTERS = "payments:callback_dead_letters"
CALLBACK_RETRIES = "payments:callback_retries"
CALLBACKS_PENDING = "payments:callbacks_pending"
# kombu's Redis transport: delivered, unacknowledged messages (hash) and their delivery times.
UNACKED = "unacked"
CLIENT_CUSTOMERS_PREFIX = "payments:client:customers:"
CLIENT_RATE_PREFIX = "payments:client:rate:"
CLIENT_BACKLOG_PREFIX = "payments:client:backlog:"
CLIENT_COUNTS = "payments:metrics:clients"
WORKER_HEARTBEAT = "payments:metrics:worker_heartbeat"
UNACKED_INDEX = "unacked_index"
CLIENT_QUEUES = "payments:queues"
DEADLINES = "payments:deadlines"
CLIENT_LISTED_PREFIX = "payments:client:listed:"
LIST_BACKFILL = "payments:list_backfill"
CLIENT_STATUS_PREFIX = "payments:client:status:"
CLIENT_CUSTOMER_PREFIX = "payments:client:customer:"


def record_key(payment_id: str) -> str:
    return RECORD_PREFIX + payment_id


def lock_key(payment_id: str) -> str:
    return LOCK_PREFIX + payment_id


def capture_lock_key(payment_id: str) -> str:
    """The lease of the worker capturing or voiding a payment's authorization (apart from the
    charge's, which a payment past its charge no longer takes)."""
    return LOCK_PREFIX + payment_id + ":capture"


def stripe_event_key(event_id: str) -> str:
    return STRIPE_EVENT_PREFIX + event_id


def refund_key(refund_id: str) -> str:
    return REFUND_PREFIX + refund_id


def refunds_key(payment_id: str) -> str:
    return REFUNDS_PREFIX + payment_id


def callback_key(event_id: str) -> str:
    return CALLBACK_PREFIX + event_id


def client_customers(client: str) -> str:
    """The customers for which a payment of the client succeeded (it may list their charges)."""
    return CLIENT_CUSTOMERS_PREFIX + client


def client_rate(client: str) -> str:
    return CLIENT_RATE_PREFIX + client


def client_backlog(client: str) -> str:
    """How many of a client's payments are pending (in the pending index)."""
    return CLIENT_BACKLOG_PREFIX + client


def client_queue(queue_name: str, client: str) -> str:
    """The Celery queue (a Redis list) of one client's charges: ``{QUEUE_NAME}.{client}``."""
    return f"{queue_name}.{client}"


def client_listed(client: str) -> str:
    """The client's payments by creation (ms): what GET /payments reads without filters."""
    return CLIENT_LISTED_PREFIX + client


def client_status(client: str, status: str) -> str:
    """The client's payments in one status, by creation (ms)."""
    return f"{CLIENT_STATUS_PREFIX}{client}:{status}"


def client_customer(client: str, customer: str) -> str:
    """The client's payments for one customer, by creation (ms)."""
    return f"{CLIENT_CUSTOMER_PREFIX}{client}:{customer}"
