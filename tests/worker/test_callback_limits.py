"""No callback receiver can hold a worker: a hard deadline on the whole exchange (shown on real
sockets), one attempt per event at a time, a bounded share of the worker's threads with a cap
per client, and the Standard Webhooks answers (410 Gone, 429/503 with Retry-After). Redis is
fakeredis; the receivers are real sockets or an httpx.MockTransport."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import fakeredis
import httpx
import pytest

from shared.callbacks.events import event_id
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store.callback_store import CallbackStore, Held
from shared.store.keys import CALLBACK_COUNTS, CALLBACK_DEAD_LETTERS, CALLBACK_RETRIES, lock_key
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStore
from tests.worker.conftest import FileCallback, MakeSender, Receiver, SeedPayment
from worker.callback_delivery import Callback, CallbackSender, Deferred
from worker.callback_slots import CallbackSlots

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
SETTINGS = Settings(environment="test", callback_signing_secrets=SECRET)


def pay_id(n: int) -> str:
    return f"pay_{n:024d}"


def callback_of(payment_id: str, attempt: int = 1) -> Callback:
    evt = event_id("payment.succeeded", payment_id)
    return Callback(evt, "payment.succeeded", payment_id, "", 1_800_000_000_000, attempt)


@pytest.fixture
def queued(seed_payment: SeedPayment, file_callback: FileCallback) -> Callable[..., Callback]:
    """A succeeded payment of ``client`` with an endpoint, its callback queued and filed."""

    def make(n: int, client: str = "shop-a", url: str = "https://shop.example.com/h") -> Callback:
        seed_payment(pay_id(n), Status.SUCCEEDED, callback_url=url, client=client)
        return file_callback(SETTINGS, callback_of(pay_id(n)))

    return make


def counts(redis: fakeredis.FakeRedis) -> dict[str, int]:
    raw: dict[bytes, bytes] = redis.hgetall(CALLBACK_COUNTS)  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def due_in(redis: fakeredis.FakeRedis, since: float) -> float:
    """Seconds from ``since`` until the one held retry is due."""
    held: list[tuple[bytes, float]] = redis.zrange(CALLBACK_RETRIES, 0, -1, withscores=True)  # type: ignore[assignment]
    ((_, due),) = held
    return due - since


# --- a hard deadline on the whole exchange (real sockets) ------------------------------------


class SlowServer:
    """A TCP server on 127.0.0.1 that reads the request and then either trickles its answer
    one byte every 0.2 s (``trickle``) or says nothing at all (a TLS handshake never answered);
    it notes when each connection was closed by the other side."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed_at: list[float] = []
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        conn.settimeout(0.2)
        with conn:
            sent = 0
            while not self._stop.is_set():
                try:
                    if not conn.recv(65536):  # the client closed its side
                        self.closed_at.append(time.monotonic())
                        return
                except TimeoutError:
                    pass
                except OSError:
                    self.closed_at.append(time.monotonic())
                    return
                if self.mode == "trickle" and sent < len(answer):
                    try:
                        conn.sendall(answer[sent : sent + 1])
                    except OSError:
                        self.closed_at.append(time.monotonic())
                        return
                    sent += 1

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture(params=["trickle", "silent"])
def slow_server(request: pytest.FixtureRequest) -> Iterator[SlowServer]:
    server = SlowServer(request.param)
    yield server
    server.close()


def test_a_receiver_cannot_stretch_an_attempt_past_its_deadline(
    redis: fakeredis.FakeRedis, queued: Callable[..., Callback], slow_server: SlowServer
) -> None:
    """One byte of the status line every 0.2 s never trips a per-read timeout, and a TLS
    handshake never answered never ends by itself: the attempt ends within its 1 s deadline
    all the same (the handshake by its own share of it), the connection closed, and the
    callback is retried on the schedule."""
    settings = Settings(
        environment="test",
        callback_signing_secrets=SECRET,
        callback_timeout_seconds=1,
        callback_allow_private_networks=True,
    )
    scheme = "http" if slow_server.mode == "trickle" else "https"
    callback = queued(1, url=f"{scheme}://hooks.shop.example.com:{slow_server.port}/h")
    sender = CallbackSender(
        CallbackStore(redis, settings), LifecycleStore(redis, settings),
        RefundStore(redis, settings), settings, resolve=lambda *_: "127.0.0.1",
    )  # fmt: skip

    started, now = time.monotonic(), time.time()
    outcome = sender.send(callback)
    took, after = time.monotonic() - started, time.time()

    assert outcome == "retry"
    assert took < 1.5
    if slow_server.mode == "trickle":
        assert took > 0.9  # ended by the deadline itself
        assert counts(redis)["deadline"] == 1
    # The schedule's first step (10 s, equal jitter), counted from when the retry was filed:
    # between the attempt's start and its end.
    assert due_in(redis, now) >= 5
    assert due_in(redis, after) <= 10
    time.sleep(0.5)
    assert len(slow_server.closed_at) == 1  # the connection did not outlive the attempt
    assert slow_server.closed_at[0] - started < 1.5


# --- one attempt per event at a time --------------------------------------------------------


def test_a_redelivered_message_never_runs_beside_a_live_attempt_nor_after_it(
    redis: fakeredis.FakeRedis, queued: Callable[..., Callback], make_sender: MakeSender,
    receiver: Receiver,
) -> None:  # fmt: skip
    callback = queued(1)
    answering = threading.Event()
    proceed = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        answering.set()
        proceed.wait(5)
        return receiver(request)

    live = CallbackSender(
        CallbackStore(redis, SETTINGS), LifecycleStore(redis, SETTINGS),
        RefundStore(redis, SETTINGS), SETTINGS, transport=httpx.MockTransport(slow),
        resolve=lambda *_: "93.184.216.34",
    )  # fmt: skip
    outcomes: list[object] = []
    first = threading.Thread(target=lambda: outcomes.append(live.send(callback)))
    first.start()
    assert answering.wait(5)

    again = make_sender(SETTINGS).send(callback)  # the same message, delivered again
    proceed.set()
    first.join(5)

    assert isinstance(again, Deferred)  # back to its queue until the live attempt is over
    assert SETTINGS.callback_lease_seconds < again.countdown <= SETTINGS.callback_lease_seconds + 1
    assert outcomes == ["delivered"]
    assert make_sender(SETTINGS).send(callback) == "duplicate"  # and after it: nothing
    assert len(receiver.requests) == 1


def test_a_message_of_an_attempt_already_replaced_is_a_duplicate(
    redis: fakeredis.FakeRedis, queued: Callable[..., Callback], make_sender: MakeSender,
    receiver: Receiver,
) -> None:  # fmt: skip
    callback = queued(1)
    receiver.statuses = [500]
    assert make_sender(SETTINGS).send(callback) == "retry"  # attempt 2 now waits its turn

    assert make_sender(SETTINGS).send(callback) == "duplicate"
    assert len(receiver.requests) == 1


def test_the_lease_is_released_by_the_outcome_and_held_while_the_attempt_runs(
    redis: fakeredis.FakeRedis, queued: Callable[..., Callback]
) -> None:
    callback = queued(1)
    store = CallbackStore(redis, SETTINGS)

    assert store.take_lease(callback.event_id, task_id=callback.task_id, token="a") == "taken"
    assert store.take_lease(callback.event_id, task_id=callback.task_id, token="a") == "taken"
    held = store.take_lease(callback.event_id, task_id=callback.task_id, token="b")
    assert isinstance(held, Held)
    assert 0 < held.seconds <= SETTINGS.callback_lease_seconds
    store.retry_at(callback.event_id, b"{}", time.time(), token="b")  # not the holder's
    assert redis.exists(lock_key(callback.event_id))
    store.settle(callback.event_id, "delivered", token="a")
    assert not redis.exists(lock_key(callback.event_id))


# --- a bounded share of the worker, and a cap per client -------------------------------------


def test_callbacks_take_a_bounded_share_and_one_client_cannot_take_all_of_it(
    redis: fakeredis.FakeRedis, queued: Callable[..., Callback], receiver: Receiver
) -> None:
    """Four slots, two per client: client A's slow receiver holds two; A's next callback is
    sent back to its queue, while client B's go through; and once B holds the other two, no
    callback of anyone starts."""
    a1, a2, a3 = queued(1, "shop-a"), queued(2, "shop-a"), queued(3, "shop-a")
    b1, b2, c1 = queued(4, "shop-b"), queued(5, "shop-b"), queued(6, "shop-c")
    release = threading.Event()
    slow_hosts = {"slow.example.com"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] in slow_hosts:
            release.wait(5)
        return receiver(request)

    slots = CallbackSlots(total=4, per_client=2)
    sender = CallbackSender(
        CallbackStore(redis, SETTINGS), LifecycleStore(redis, SETTINGS),
        RefundStore(redis, SETTINGS), SETTINGS, transport=httpx.MockTransport(answer),
        resolve=lambda *_: "93.184.216.34", slots=slots,
    )  # fmt: skip
    for n in (1, 2, 4, 5):  # A's receiver and, later, B's are slow
        redis.hset(f"payments:record:{pay_id(n)}", "callback_url", "https://slow.example.com/h")
    threads = [threading.Thread(target=sender.send, args=(c,)) for c in (a1, a2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: slots.in_flight("shop-a") == 2)

    a_more = sender.send(a3)
    c_now = sender.send(c1)
    threads += [threading.Thread(target=sender.send, args=(c,)) for c in (b1, b2)]
    for thread in threads[2:]:
        thread.start()
    wait_for(lambda: slots.in_flight() == 4)
    full = sender.send(queued(7, "shop-d"))
    release.set()
    for thread in threads:
        thread.join(5)

    assert isinstance(a_more, Deferred)  # A's share is full: back to the queue, not a thread
    assert 1 <= a_more.countdown <= 1 + SETTINGS.callback_timeout_seconds / 5
    assert c_now == "delivered"  # another client's callback still goes
    assert isinstance(full, Deferred)  # the callbacks' share is full: charges keep the rest
    assert slots.in_flight() == 0
    assert len(receiver.requests) == 5  # a1, a2, c1, b1, b2


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_default_share_is_a_quarter_of_the_pool_and_half_of_it_per_client() -> None:
    sixteen = Settings(environment="test", worker_concurrency=16)
    assert (sixteen.callback_slots, sixteen.callback_client_slots) == (4, 2)
    default = Settings(environment="test")
    assert (default.callback_slots, default.callback_client_slots) == (32, 16)
    assert default.callback_timeout_seconds == 15
    one = Settings(environment="test", worker_concurrency=1)
    assert (one.callback_slots, one.callback_client_slots) == (1, 1)
    set_ = Settings(environment="test", callback_max_in_flight=8,
                    callback_max_in_flight_per_client=20)  # fmt: skip
    assert (set_.callback_slots, set_.callback_client_slots) == (8, 8)
    with pytest.raises(ValueError, match="CALLBACK_TIMEOUT_SECONDS"):
        Settings(environment="test", visibility_timeout_seconds=30, stripe_timeout_seconds=5,
                 charge_retry_backoff_max_seconds=10, callback_timeout_seconds=30)  # fmt: skip


# --- Standard Webhooks answers ----------------------------------------------------------------


def test_410_gone_is_a_dead_letter_at_once_logged_and_counted(
    redis: fakeredis.FakeRedis, queued: Callable[..., Callback], make_sender: MakeSender,
    receiver: Receiver,
) -> None:  # fmt: skip
    callback = queued(1)
    receiver.statuses = [410]

    assert make_sender(SETTINGS).send(callback) == "dead_lettered"

    ((kept_id, kept, _),) = CallbackStore(redis, SETTINGS).dead_letters()
    assert (kept_id, kept["reason"], kept["attempts"]) == (callback.event_id, "gone: HTTP 410", "1")
    assert redis.zcard(CALLBACK_RETRIES) == 0  # never retried
    assert counts(redis)["gone"] == 1
    assert redis.zscore(CALLBACK_DEAD_LETTERS, callback.event_id) is not None


def http_date(after: timedelta) -> str:
    return format_datetime(datetime.now(UTC) + after, usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after", "at_least", "at_most"),
    [
        (429, "3600", 3600, 3601),
        (503, timedelta(hours=2), 7198, 7201),  # an HTTP date, to the second
        (429, "864000", 86_400, 86_401),  # ten days asked: a day at most
        (429, None, 5, 11),  # no Retry-After: the schedule (10 s, equal jitter)
        (503, "not a date", 5, 11),
        (500, "3600", 5, 11),  # Retry-After means something on 429 and 503 only
    ],
)
def test_429_and_503_are_retried_no_sooner_than_retry_after_says(
    redis: fakeredis.FakeRedis, queued: Callable[..., Callback], make_sender: MakeSender,
    status: int, retry_after: str | timedelta | None, at_least: float, at_most: float,
) -> None:  # fmt: skip
    callback = queued(1)
    now = time.time()
    if isinstance(retry_after, timedelta):
        retry_after = http_date(retry_after)
    headers = {"retry-after": retry_after} if retry_after else {}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    sender = CallbackSender(
        CallbackStore(redis, SETTINGS), LifecycleStore(redis, SETTINGS),
        RefundStore(redis, SETTINGS), SETTINGS, transport=httpx.MockTransport(answer),
        resolve=lambda *_: "93.184.216.34",
    )  # fmt: skip

    assert sender.send(callback) == "retry"
    assert at_least <= due_in(redis, now) <= at_most
