"""Every read and write of payment state in Redis, one typed method per atomic step.

Each method that changes more than one key is one Lua script (``lua/<name>.lua``): one step of
a payment's life, all or nothing, in one round trip. ``AsyncPaymentStore`` serves the API's
event loop, ``PaymentStore`` the workers' threads; the key layout is in ``shared.store.keys``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson
import redis
import structlog
from redis.asyncio import Redis as AsyncRedis

from shared.backoff import delays
from shared.callbacks.events import payment_callback
from shared.celery_message import charge_message, charge_messages
from shared.payments.payment_records import PaymentRecord, ms_from_iso, now_iso
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.callback_store import filing as callback_filing
from shared.store.leased_steps import LeasedSteps, script_args
from shared.store.lifecycle_store import ACTION_RECHECK_FIRST_SECONDS
from shared.store.lua_scripts import source
from shared.store.replicated_writes import ReplicatedScript
from shared.store.unsent_store import DeadlineStore

# Items one call of accept.lua takes at most: a bigger batch is several calls, sent together.
ACCEPT_CALL_ITEMS = 100
# Producers stamp messages with their own clock; the sweep allows this much disagreement
# between two hosts' clocks before it believes the queue has moved past a payment.
CLOCK_SKEW_MS = 5_000
SWEEP_BATCH = 500
# A worker whose outcome write is not replicated yet tries again after this, doubling.
REPLICATION_RETRY_SECONDS = 0.1
REPLICATION_RETRY_MAX_SECONDS = 5.0

log = structlog.get_logger(__name__)


_args = script_args


def decode_record(flat: list[Any]) -> PaymentRecord:
    """A record from a script's ``HGETALL`` reply (a flat list of names and values)."""
    return PaymentRecord.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))


def now_ms() -> int:
    return int(time.time() * 1000)


def _enqueued_ms(message: bytes | None) -> int:
    """A queued message's ``enqueued_at`` stamp (ms): -1 for no message, 0 for a message
    without the stamp (which makes the sweep assume nothing was lost)."""
    if message is None:
        return -1
    try:
        stamp = orjson.loads(message)["headers"].get("enqueued_at")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return 0
    return int(stamp) if str(stamp).isdigit() else 0


# --- the API's side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """claim_and_enqueue's answer: the new record, or the one that already had the key."""

    record: PaymentRecord | None  # None: refused (see refusal), nothing was written
    created: bool
    # "queue_full", "client_backlog_full" or "rate_limited" when record is None.
    refusal: str | None = None
    retry_after_ms: int = 0
    tokens_left: int = -1  # the client's request budget after this one (-1: no limit)
    # A new payment: how many charges waited before it in its client's queue (-1: not known),
    # and its place in the order of the client's accepts (its record's queue_seq).
    ahead: int = -1
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one client may do at accept (see shared/settings/api_clients.py)."""

    name: str
    max_rps: float  # 0: no rate limit
    burst: int
    max_backlog: int  # payments not yet final that this client may have


REFUSALS = {2: "queue_full", 3: "rate_limited", 4: "client_backlog_full"}


def _claimed(result: list[Any], fields: dict[str, str]) -> Claimed:
    """The accept script's answer (see accept.lua)."""
    code, tokens = int(result[0]), int(result[1])
    if code == 1:
        ahead, seq = (int(result[2]), int(result[3])) if len(result) > 3 else (-1, 0)
        return Claimed(PaymentRecord.from_redis({**fields, "queue_seq": str(seq)}),
                       created=True, tokens_left=tokens, ahead=ahead, seq=seq)  # fmt: skip
    if code == 0:
        return Claimed(decode_record(result[2]), created=False, tokens_left=tokens)
    return Claimed(None, created=False, refusal=REFUSALS[code], tokens_left=tokens,
                   retry_after_ms=int(result[2]) if len(result) > 2 else 0)  # fmt: skip


def _client_keys(queue: str, limits: ClientLimits) -> list[Any]:
    """accept.lua's keys before the items' records."""
    return [
        queue,
        keys.PENDING_INDEX,
        keys.ACCEPTED_COUNT,
        keys.client_rate(limits.name),
        keys.client_backlog(limits.name),
        keys.CLIENT_COUNTS,
        keys.CLIENT_QUEUES,
        keys.DEADLINES,
    ]


def _token_taken(result: list[Any]) -> Claimed:
    """The take_token script's answer: the tokens left, or rate_limited."""
    if int(result[0]) == 1:
        return Claimed(None, created=False, tokens_left=int(result[1]))
    return Claimed(None, created=False, refusal="rate_limited", tokens_left=0,
                   retry_after_ms=int(result[2]))  # fmt: skip


class AsyncPaymentStore:
    def __init__(self, client: AsyncRedis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._accept = client.register_script(source("accept"))
        self._take_token: Any = None
        # Replicated accept: REDIS_MIN_REPLICAS > 0 sends the script with a WAIT on the same
        # connection (shared/store/replicated_writes.py; the calls of one event-loop tick share
        # one pipeline and one WAIT).
        self._min_replicas = settings.redis_min_replicas
        self._accept_replicated = ReplicatedScript(
            client,
            source("accept"),
            replicas=settings.redis_min_replicas,
            timeout_ms=settings.redis_wait_timeout_ms,
        )

    async def claim_and_enqueue(
        self,
        *,
        fields: dict[str, str],
        headers: dict[str, Any],
        limits: ClientLimits | None = None,
    ) -> Claimed:
        """Write a new payment's record and enqueue its charge, unless its id (derived from
        the client's Idempotency-Key) already has a record, the client is over its request
        rate or its share of the backlog, or the queue is full: accept.lua with one item.
        NotDurable with REDIS_MIN_REPLICAS when the replicas did not acknowledge in time."""
        limits = limits or self._anonymous()
        keys_, args_, written = self._accept_call([fields], headers, limits)
        if self._min_replicas:
            replies = await self._accept_replicated(keys=keys_, args=args_)
        else:
            replies = await self._accept(keys=keys_, args=args_)
        return _claimed(replies[0], fields=written[0] or fields)

    async def claim_many(
        self,
        claims: Sequence[dict[str, str] | None],
        *,
        headers: dict[str, Any],
        limits: ClientLimits | None = None,
    ) -> list[Claimed | Exception]:
        """:meth:`claim_and_enqueue` for many payments (each a new record's ``fields``) in
        their order, each all or nothing on its own: calls of accept.lua of at most
        ACCEPT_CALL_ITEMS items each, made together (through the API's group commit one round
        trip for up to ACCEPT_CALL_ITEMS items; past that the first call goes at once and the
        rest in the next tick's pipeline; with REDIS_MIN_REPLICAS, one pipeline and one
        ``WAIT``). Redis runs a script whole, so a call's size bounds how long other clients'
        commands wait behind a batch.
        ``None`` in ``claims`` takes a request's token only (an item refused before its claim;
        Claimed with refusal "rate_limited" over the rate). Each answer is a Claimed, or its
        call's error (NotDurable, a script's error, a connection error), the same for every
        item of that call; when every call met a connection error, it is raised."""
        limits = limits or self._anonymous()
        script = self._accept_replicated if self._min_replicas else self._accept
        calls = [
            self._accept_call(claims[i : i + ACCEPT_CALL_ITEMS], headers, limits)
            for i in range(0, len(claims), ACCEPT_CALL_ITEMS)
        ]
        replies = await asyncio.gather(
            *(script(keys=keys_, args=args_) for keys_, args_, _ in calls),
            return_exceptions=True,
        )
        lost = [
            r for r in replies if isinstance(r, redis.exceptions.ConnectionError | TimeoutError)
        ]
        if lost and len(lost) == len(replies):
            raise lost[0]
        results: list[Claimed | Exception] = []
        for (_, _, written), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                results += [reply] * len(written)
            elif isinstance(reply, BaseException):
                raise reply
            else:
                results += [
                    _token_taken(one) if fields is None else _claimed(one, fields)
                    for one, fields in zip(reply, written, strict=True)
                ]
        return results

    def _accept_call(
        self,
        claims: Sequence[dict[str, str] | None],
        headers: dict[str, Any],
        limits: ClientLimits,
    ) -> tuple[list[Any], list[Any], list[dict[str, str] | None]]:
        """accept.lua's keys and arguments for ``claims`` (see the script for their layout),
        and each item's record as written (None: a token only)."""
        enqueued_at = now_ms()
        # Each client's charges wait in a queue of their own, which workers take from in
        # weighted turns (worker.fair_queues); the record names it for the recovery sweep.
        queue = keys.client_queue(self._settings.queue_name, limits.name)
        stamp = {"enqueued_at": str(enqueued_at), "queue": queue}
        keys_: list[Any] = _client_keys(queue, limits)
        args_: list[Any] = [b""]
        written: list[dict[str, str] | None] = []
        owners = set()
        ids = [c["id"] for c in claims if c is not None]
        message_headers = {**headers, "enqueued_at": enqueued_at}
        messages = iter(charge_messages(ids, queue=queue, headers=message_headers))
        created_ms: dict[str, int] = {}  # a batch's items share their creation time
        for claim in claims:
            if claim is None:
                args_.append(0)
                written.append(None)
                continue
            payment_id = claim["id"]
            fields = {**claim, **stamp}
            owners.add(fields.get("client"))
            created = fields["created_at"]
            if created not in created_ms:
                created_ms[created] = ms_from_iso(created)
            keys_.append(keys.record_key(payment_id))
            args_ += (
                len(fields),
                next(messages),
                created_ms[created],
                payment_id,
                fields["account_id"],
                fields["status"],
                fields.get("expires_ms", ""),
            )
            args_ += chain.from_iterable(fields.items())
            written.append(fields)
        if len(owners) > 1:
            raise ValueError(f"one call of accept.lua indexes one client's payments: {owners}")
        owner = owners.pop() if owners else None
        common = self._common_args(limits)
        args_[0] = _args(**common, owner=owner) if owner else _args(**common)
        return keys_, args_, written

    def _common_args(self, limits: ClientLimits) -> dict[str, Any]:
        """The accept script's arguments that are the same for every payment of a client."""
        return {
            "record_ttl": self._settings.record_ttl_seconds,
            "max_backlog": self._settings.queue_max_backlog,
            "sweep_at": int(time.time()) + self._settings.sweep_stale_seconds,
            "client": limits.name,
            "rate": limits.max_rps,
            "burst": limits.burst,
            "client_max_backlog": limits.max_backlog,
        }

    def _anonymous(self) -> ClientLimits:
        return ClientLimits("anonymous", 0, 1, self._settings.queue_max_backlog)

    async def get(self, payment_id: str) -> PaymentRecord | None:
        raw = await self._redis.hgetall(keys.record_key(payment_id))
        return PaymentRecord.from_redis(raw) if raw else None

    async def queue_standing(self, queue: str, client: str) -> tuple[int, int]:
        """A client's queue as a queued payment's position is estimated from it: how many
        charges wait in it, and how many the client has had accepted (one round trip)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(queue)
            pipe.hget(keys.CLIENT_COUNTS, f"{client}|accepted")
            waiting, accepted = await pipe.execute()
        return int(waiting), int(accepted or 0)

    async def take_token(self, limits: ClientLimits) -> Claimed:
        """One request of a route other than accept from the client's rate budget."""
        if limits.max_rps <= 0:
            return Claimed(None, created=False)
        keys_, args_ = self._token_call(limits)
        return _token_taken(await self._token_script()(keys=keys_, args=args_))

    def _token_script(self) -> Any:
        if self._take_token is None:
            self._take_token = self._redis.register_script(source("take_token"))
        return self._take_token

    @staticmethod
    def _token_call(limits: ClientLimits) -> tuple[list[Any], list[Any]]:
        return (
            [keys.client_rate(limits.name), keys.CLIENT_COUNTS],
            [_args(client=limits.name, rate=limits.max_rps, burst=limits.burst)],
        )

    async def clients_of(self, payment_ids: Sequence[str]) -> dict[str, str]:
        """The client of each payment whose record is still kept and names one."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for payment_id in payment_ids:
                pipe.hget(keys.record_key(payment_id), "client")
            found = await pipe.execute()
        return {p: c.decode() if isinstance(c, bytes) else str(c)
                for p, c in zip(payment_ids, found, strict=True) if c}  # fmt: skip

    async def has_paid(self, client: str, customer: str) -> bool:
        """Whether a payment of this client for this customer has succeeded (the last one
        within RECORD_TTL_SECONDS)."""
        return bool(await self._redis.sismember(keys.client_customers(client), customer))


# --- the workers' side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    record: PaymentRecord


class Busy:
    """Another worker holds the payment's lease."""


class Skip:
    """Nothing to do: the record is gone (expired) or already final."""


class PastDeadline:
    """Nothing was sent for it and its deadline has passed: no attempt may start."""


BUSY = Busy()
SKIP = Skip()
PAST_DEADLINE = PastDeadline()


class PaymentStore(LeasedSteps):
    """The workers' steps. Thread-safe: one instance per process, shared by its threads."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(
            client,
            settings,
            (
                "start_attempt",
                "take_lease",
                "heartbeat",
                "release",
                "finish",
                "postpone_check",
                "requeue_stale",
                "replay",
            ),
        )
        # Payments still queued past their deadline end expired (shared.store.unsent_store).
        self.deadlines = DeadlineStore(client, settings)

    def _held(self, record_id: str) -> tuple[str, str]:
        return keys.record_key(record_id), keys.lock_key(record_id)

    def _message(self, payment_id: str, queue: str, enqueued_at: int, **headers: Any) -> str:
        """The charge task's message, stamped with when it was enqueued (see requeue_stale)."""
        headers["enqueued_at"] = enqueued_at
        return charge_message(payment_id, queue=queue, headers=headers).decode()

    def _queues_of(self, payment_ids: list[str]) -> list[str]:
        """The queue each payment's charge was pushed to: its record's ``queue`` (QUEUE_NAME
        for a record written before charges had a queue per client)."""
        with self._redis.pipeline(transaction=False) as pipe:
            for payment_id in payment_ids:
                pipe.hget(keys.record_key(payment_id), "queue")
            found: list[bytes | None] = pipe.execute()
        return [q.decode() if q else self._settings.queue_name for q in found]

    def get(self, payment_id: str) -> PaymentRecord | None:
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.record_key(payment_id))  # type: ignore[assignment]
        return PaymentRecord.from_redis(raw) if raw else None

    # charge attempts ---------------------------------------------------------------------

    def start_attempt(
        self, payment_id: str, *, token: str, now: float | None = None
    ) -> Started | Busy | Skip | PastDeadline:
        now = time.time() if now is None else now
        result = self._run(
            "start_attempt",
            [keys.record_key(payment_id), keys.lock_key(payment_id)],
            token=token,
            lease_ms=self.lease_ms,
            now_iso=now_iso(),
            now=int(now),
            now_ms=int(now * 1000),
        )
        if result[0] == 1:
            return Started(decode_record(result[1]))
        if result[0] == -3:
            return PAST_DEADLINE
        return BUSY if result[0] == -2 else SKIP

    def take_lease(self, payment_id: str, *, token: str) -> Started | Busy | Skip:
        """Hold a payment that is not final without counting a charge attempt."""
        result = self._run(
            "take_lease",
            [keys.record_key(payment_id), keys.lock_key(payment_id)],
            token=token,
            lease_ms=self.lease_ms,
        )
        if result[0] == 1:
            return Started(decode_record(result[1]))
        return BUSY if result[0] == -2 else SKIP

    def heartbeat(self, payment_id: str, *, token: str, delivery_tag: str | None) -> bool:
        """Extend the lease and the message's visibility while waiting; False if lost."""
        return bool(
            self._run(
                "heartbeat",
                [keys.lock_key(payment_id), keys.record_key(payment_id), keys.UNACKED_INDEX],
                token=token,
                lease_ms=self.lease_ms,
                now=int(time.time()),
                delivery_tag=delivery_tag or "",
            )
        )

    def remember_payment_method(self, payment_id: str, method: str) -> None:
        """Stored so that every retry sends Stripe the very same parameters."""
        self._redis.hset(keys.record_key(payment_id), "payment_method", method)

    def finish(
        self,
        payment_id: str,
        *,
        status: Status,
        fields: Mapping[str, str],
        outcome_field: str = "",
        dead_letter: bool = False,
        clear: tuple[str, ...] = (),
        check_at: float = 0,
    ) -> bool:
        """Record where the payment stands (final, or ``unknown`` until ``check_at``), release
        its lease and tell waiting requests. False if it was already final."""
        keys_ = [
            keys.record_key(payment_id),
            keys.lock_key(payment_id),
            keys.EVENTS_CHANNEL,
            keys.DEAD_LETTERS,
            keys.PENDING_INDEX,
            keys.OUTCOME_COUNTS,
            keys.UNKNOWN_INDEX,
            self._settings.callback_queue,
            keys.AWAITING_ACTION,
        ]
        named = dict(
            payment_id=payment_id,
            status=status.value,
            fields=dict(fields),
            clear=list(clear),
            outcome_field=outcome_field,
            dead_letter=dead_letter,
            check_at=int(check_at),
            now=int(time.time()),
            now_iso=now_iso(),
            backlog_prefix=keys.CLIENT_BACKLOG_PREFIX,
            customers_prefix=keys.CLIENT_CUSTOMERS_PREFIX,
            record_ttl=self._settings.record_ttl_seconds,
            # The client's callback for this outcome, pushed by the script itself.
            callback=payment_callback(self._settings, payment_id, status).decode(),
            filing=callback_filing(self._settings),
            awaiting_action=status is Status.REQUIRES_ACTION,
            action_check_at=int(time.time() + ACTION_RECHECK_FIRST_SECONDS),
        )
        if self._settings.redis_min_replicas:
            named["quiet"] = True  # waiters hear it once a replica holds it, not before
            done = self._finish_replicated(payment_id, keys_, _args(**named))
            self._redis.publish(keys.EVENTS_CHANNEL, payment_id)
            return done
        done = self._run("finish", keys_, **named)
        return bool(done == 1)

    # --- replicated outcome: with REDIS_MIN_REPLICAS > 0 the outcome is written,
    # fenced and WAITed for on one connection, and written again until enough replicas hold it,
    # before the task returns and its message is acknowledged.
    def _finish_replicated(self, payment_id: str, keys_: list[str], args_: bytes) -> bool:
        done = False
        waits = delays(base=REPLICATION_RETRY_SECONDS, cap=REPLICATION_RETRY_MAX_SECONDS)
        while True:
            with self._redis.pipeline(transaction=False) as pipe:
                self._scripts["finish"](keys=keys_, args=[args_], client=pipe)
                pipe.incr(keys.DURABILITY_FENCE)
                pipe.wait(self._settings.redis_min_replicas, self._settings.redis_wait_timeout_ms)
                written, _, acked = pipe.execute()
            # Written again after a failover lost it: still this call's outcome.
            done = done or written == 1
            if int(acked) >= self._settings.redis_min_replicas:
                return done
            delay = next(waits)
            log.warning("store.not_durable", payment_id=payment_id, replicas=int(acked),
                        retry_in=delay)  # fmt: skip
            time.sleep(delay)

    def replicated(self) -> None:
        """Return once REDIS_MIN_REPLICAS replicas hold every write made so far (a fence and
        WAIT): for a task that wrote nothing itself (its payment already final) before its
        message is acknowledged. Nothing to do with REDIS_MIN_REPLICAS=0."""
        wanted = self._settings.redis_min_replicas
        waits = delays(base=REPLICATION_RETRY_SECONDS, cap=REPLICATION_RETRY_MAX_SECONDS)
        while wanted:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(keys.DURABILITY_FENCE)
                pipe.wait(wanted, self._settings.redis_wait_timeout_ms)
                _, acked = pipe.execute()
            if int(acked) >= wanted:
                return
            delay = next(waits)
            log.warning("store.not_durable", replicas=int(acked), retry_in=delay)
            time.sleep(delay)

    # reconciliation of unknown outcomes ------------------------------------------------

    def due_unknown(self, *, limit: int) -> list[str]:
        return self._due(keys.UNKNOWN_INDEX, until=time.time(), limit=limit)

    def postpone_check(self, payment_id: str, *, token: str, check_at: float) -> None:
        self._run(
            "postpone_check",
            [keys.lock_key(payment_id), keys.record_key(payment_id), keys.UNKNOWN_INDEX],
            payment_id=payment_id,
            token=token,
            check_at=int(check_at),
        )

    # recovery sweep --------------------------------------------------------------------

    def queue_oldest_ms(self, queue: str | None = None) -> int:
        """When the oldest message still in the queue (QUEUE_NAME, or ``queue``) was enqueued
        (-1: queue empty; 0: a message without the stamp, which makes the sweep assume nothing
        was lost)."""
        raw: bytes | None = self._redis.lindex(queue or self._settings.queue_name, -1)  # type: ignore[assignment]
        return _enqueued_ms(raw)

    def queues_oldest_ms(self, queues: set[str]) -> dict[str, int]:
        """``queue_oldest_ms`` of each queue, read in one round trip."""
        names = sorted(queues)
        with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.lindex(name, -1)  # pushed on the left, popped on the right: the oldest
            tails: list[bytes | None] = pipe.execute()
        return {name: _enqueued_ms(tail) for name, tail in zip(names, tails, strict=True)}

    def reserved_task_ids(self) -> set[str]:
        """Task ids of the messages delivered to workers and not yet acknowledged (kombu's
        ``unacked`` hash: bounded by the fleet's threads x prefetch, not by the backlog)."""
        ids = set()
        raw: list[bytes] = self._redis.hvals(keys.UNACKED)  # type: ignore[assignment]
        for value in raw:
            try:
                ids.add(str(orjson.loads(value)[0]["headers"]["id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
                continue
        return ids

    def requeue_stale(self, *, now: float | None = None) -> list[str]:
        """Push again the due pending payments whose messages are provably lost: not final, no
        worker holds the payment or its message, the queue has moved past it, and no worker
        has shown life for it since SWEEP_STALE_SECONDS ago. A round looks at most SWEEP_BATCH
        payments and reads the queue's tail and the reserved messages once, so its cost does
        not grow with the backlog."""
        now = time.time() if now is None else now
        stale_seconds = self._settings.sweep_stale_seconds
        due: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            keys.PENDING_INDEX, "-inf", now, start=0, num=SWEEP_BATCH
        )
        if not due:
            return []
        payment_ids = [member.decode() for member in due]
        queues = self._queues_of(payment_ids)
        # Read before the reserved messages: a message only ever leaves a queue, so one that
        # has left it by now is with a worker (reserved), acknowledged, or lost.
        oldest = self.queues_oldest_ms(set(queues))
        reserved = self.reserved_task_ids()
        requeued = []
        for payment_id, queue in zip(payment_ids, queues, strict=True):
            if payment_id in reserved:
                self._redis.zadd(keys.PENDING_INDEX, {payment_id: int(now) + stale_seconds})
                continue
            stamp = int(now * 1000)
            message = self._message(payment_id, queue, stamp, recovered=True)
            pushed = self._run(
                "requeue_stale",
                [
                    keys.PENDING_INDEX,
                    queue,
                    keys.record_key(payment_id),
                    keys.lock_key(payment_id),
                ],
                payment_id=payment_id,
                message=message,
                next_at=int(now) + stale_seconds,
                queue_oldest_ms=oldest[queue],
                clock_skew_ms=CLOCK_SKEW_MS,
                stale_before=int(now) - stale_seconds,
                now_ms=stamp,
            )
            if pushed == 1:
                requeued.append(payment_id)
        return requeued

    def take_maintenance_turn(self, seconds: float) -> bool:
        """One worker a round; the turn expires before the next round is due."""
        return bool(
            self._redis.set(keys.MAINTENANCE_LOCK, "1", nx=True, ex=max(1, int(seconds) - 1))
        )

    # dead letters ----------------------------------------------------------------------

    def dead_letters(self) -> list[tuple[str, PaymentRecord | None, float]]:
        entries: list[tuple[bytes, float]] = self._redis.zrange(  # type: ignore[assignment]
            keys.DEAD_LETTERS, 0, -1, withscores=True
        )
        return [(member.decode(), self.get(member.decode()), score) for member, score in entries]

    def replay(self, payment_id: str) -> bool:
        """Requeue one dead letter (reconciled before any new charge); False if it is not
        (or no longer) one."""
        stamp = now_ms()
        (queue,) = self._queues_of([payment_id])  # its own client's queue, where the sweep looks
        message = self._message(payment_id, queue, stamp, replayed=True)
        done = self._run(
            "replay",
            [
                keys.record_key(payment_id),
                keys.DEAD_LETTERS,
                queue,
                keys.PENDING_INDEX,
            ],
            payment_id=payment_id,
            message=message,
            now_iso=now_iso(),
            now_ms=stamp,
            sweep_at=int(time.time()) + self._settings.sweep_stale_seconds,
            backlog_prefix=keys.CLIENT_BACKLOG_PREFIX,
        )
        return bool(done == 1)
