"""REDIS_URL's Sentinel form (shared/settings/redis_url.py) and the replicated steps of the
store."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import redis.asyncio.sentinel
import redis.sentinel
from pydantic import ValidationError

from shared.errors import NotDurable
from shared.payments.payment_records import new_record_fields
from shared.payments.states import Status
from shared.redis_clients import async_redis, celery_broker, sync_redis
from shared.settings.redis_url import SentinelTarget, broker, parse_sentinel_url
from shared.settings.service_settings import Settings
from shared.store import AsyncPaymentStore, PaymentStore
from shared.store.keys import DURABILITY_FENCE
from shared.store.payment_store import Claimed

THREE = "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380,sentinel-3/payments/2"


def test_the_sentinel_form_names_every_sentinel_the_master_and_the_db() -> None:
    target = parse_sentinel_url(THREE)

    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3", 26379)),
        master_name="payments",
        db=2,
        password="s3cret",
    )
    assert target.tls_options() == {}


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://:t@primary:6379/0?ssl_cert_reqs=required",
     "unix:///tmp/redis.sock", "redis-sentinel-host:6379"],
)  # fmt: skip
def test_a_plain_url_is_not_the_sentinel_form(url: str) -> None:
    assert parse_sentinel_url(url) is None


def test_defaults_user_ipv6_and_an_escaped_password() -> None:
    target = parse_sentinel_url("redis+sentinel://app:p%40ss@[::1]:26379,[fe80::2]/mymaster")

    assert target is not None
    assert target.sentinels == (("::1", 26379), ("fe80::2", 26379))
    assert (target.username, target.password, target.db) == ("app", "p@ss", 0)
    assert parse_sentinel_url("redis+sentinel://h/m/").db == 0  # type: ignore[union-attr]
    bare = parse_sentinel_url("redis+sentinel://onlypassword@h/m/1")
    assert bare is not None
    assert (bare.username, bare.password) == (None, "onlypassword")


def test_tls_form_with_its_options() -> None:
    target = parse_sentinel_url(
        "rediss+sentinel://:t@h1:26379,h2:26379/m/0?ssl_cert_reqs=optional&ssl_ca_certs=/ca.pem"
    )

    assert target is not None
    assert target.tls
    assert target.tls_options() == {
        "ssl": True,
        "ssl_cert_reqs": "optional",
        "ssl_ca_certs": "/ca.pem",
    }
    assert broker(
        "rediss+sentinel://:t@h1:26379/m/0?ssl_cert_reqs=optional", None, 1.0
    ).use_ssl == {"ssl_cert_reqs": ssl.CERT_OPTIONAL}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379,h2:26379", "master's name"),
        ("redis+sentinel://h1:26379/", "master's name"),
        ("redis+sentinel://h1:26379/m/zero", "/<master-name>/<db>"),
        ("redis+sentinel://h1:26379/m/0/extra", "/<master-name>/<db>"),
        ("redis+sentinel://h1:port/m/0", "bad Sentinel port"),
        ("redis+sentinel://h1:26379,,h3/m/0", "empty Sentinel address"),
        ("redis+sentinel://:pw@h1:99999/m/0", "bad Sentinel port"),
        ("redis+sentinel://h1/m/0?ssl_cert_reqs=required", "TLS form"),
        ("rediss+sentinel://h1/m/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("redis+sentinel://h1/m/0?socket_timeout=3", "unknown option"),
        ("redis+sentinel://:pw#1@h1/m/0", "percent-encode"),
        ("redis+sentinel://:pw[1@h1/m/0", "is not a URL"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")) as raised:
        parse_sentinel_url(url)
    assert "pw" not in str(raised.value)  # the password is never repeated


def test_settings_refuse_a_malformed_sentinel_url_at_start() -> None:
    with pytest.raises(ValidationError, match="master's name"):
        Settings(environment="test", redis_url="redis+sentinel://h1:26379")
    assert Settings(environment="test", redis_url=THREE).redis_min_replicas == 0


def test_wait_must_fit_in_the_socket_timeout() -> None:
    with pytest.raises(ValidationError, match="REDIS_WAIT_TIMEOUT_MS"):
        Settings(environment="test", redis_min_replicas=1, redis_wait_timeout_ms=1500)
    Settings(environment="test", redis_min_replicas=1, redis_wait_timeout_ms=500)


def test_every_client_follows_the_sentinels() -> None:
    settings = Settings(environment="test", redis_url=THREE, redis_sentinel_password="sp")

    for client in (sync_redis(settings), async_redis(settings), async_redis(settings,
                   for_pubsub=True)):  # fmt: skip
        pool: Any = client.connection_pool
        assert isinstance(
            pool,
            redis.sentinel.SentinelConnectionPool | redis.asyncio.sentinel.SentinelConnectionPool,
        )
        assert pool.service_name == "payments"
        assert pool.is_master
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["password"]) == (2, "s3cret")
        assert kwargs["retry"].get_retries() == 1
        sentinels = pool.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [
            26379,
            26380,
            26379,
        ]
        assert sentinels[0].connection_pool.connection_kwargs["password"] == "sp"
        # No Sentinel answering is a prompt 503, not redis-py's default backoff of seconds.
        assert sentinels[0].connection_pool.connection_kwargs["retry"].get_retries() == 1


def test_celery_broker_for_each_form() -> None:
    plain = celery_broker(Settings(environment="test", redis_url="redis://h:6379/3"))
    assert (plain.url, plain.transport, plain.transport_options) == (
        "redis://h:6379/3",
        "worker.transport:Transport",
        {},
    )

    sentinel = celery_broker(
        Settings(environment="test", redis_url=THREE, redis_sentinel_password="sp")
    )
    assert sentinel.url == (
        "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://:s3cret@10.0.0.2:26380/2;"
        "sentinel://:s3cret@sentinel-3:26379/2"
    )
    assert sentinel.transport == "worker.transport:SentinelTransport"
    assert sentinel.transport_options["master_name"] == "payments"
    assert sentinel.transport_options["sentinel_kwargs"]["password"] == "sp"
    assert sentinel.use_ssl is None


def test_the_sentinel_transport_keeps_the_projects_channel_fixes() -> None:
    from kombu.transport import redis as kombu_redis

    from worker.transport import Channel, SentinelChannel, SentinelTransport

    assert SentinelTransport.Channel is SentinelChannel
    mro = SentinelChannel.__mro__
    assert mro.index(Channel) < mro.index(kombu_redis.SentinelChannel)
    for fixed in ("basic_ack", "basic_reject", "conn_or_acquire", "do_restore"):
        assert getattr(SentinelChannel, fixed) is getattr(Channel, fixed)


# --- the replicated steps, against a stand-in client (fakeredis has no WAIT) --------------


class Pipe:
    def __init__(self, client: StubClient) -> None:
        self.client = client
        self.commands: list[tuple[Any, ...]] = []

    def evalsha(self, sha: str, numkeys: int, *rest: Any) -> None:
        self.commands.append(("EVALSHA", sha))

    def incr(self, key: str) -> None:
        self.commands.append(("INCR", key))

    def wait(self, replicas: int, timeout: int) -> None:
        self.commands.append(("WAIT", replicas, timeout))

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self.client.sent.append(self.commands)
        return [self.client.script_answer, 1, self.client.replicas.pop(0)]


class StubClient:
    def __init__(self, replicas: list[int], script_answer: Any) -> None:
        self.replicas = replicas
        self.script_answer = script_answer
        self.sent: list[list[tuple[Any, ...]]] = []

    def register_script(self, source: str) -> Any:
        return None

    def pipeline(self, transaction: bool = True) -> Pipe:
        assert transaction is False  # WAIT must not sit inside MULTI
        return Pipe(self)


def fields() -> dict[str, str]:
    return new_record_fields(payment_id="pay_x", account_id="cus_A", amount_minor=4299,
                             currency="usd", payment_method=None, idempotency_key="k",
                             fingerprint="f" * 64)  # fmt: skip


async def test_an_accept_waits_for_the_replicas_on_its_own_connection() -> None:
    client = StubClient([1], script_answer=[[1, -1]])
    settings = Settings(environment="test", redis_min_replicas=1, redis_wait_timeout_ms=250)
    store = AsyncPaymentStore(client, settings)  # type: ignore[arg-type]

    claimed = await store.claim_and_enqueue(fields=fields(), headers={})

    assert claimed.created
    (commands,) = client.sent
    assert [c[0] for c in commands] == ["EVALSHA", "INCR", "WAIT"]
    assert commands[1] == ("INCR", DURABILITY_FENCE)
    assert commands[2] == ("WAIT", 1, 250)


async def test_an_accept_no_replica_acknowledged_is_503_not_durable() -> None:
    client = StubClient([0], script_answer=[1])
    settings = Settings(environment="test", redis_min_replicas=1)
    store = AsyncPaymentStore(client, settings)  # type: ignore[arg-type]

    with pytest.raises(NotDurable) as raised:
        await store.claim_and_enqueue(fields=fields(), headers={})

    error = raised.value
    assert (error.status_code, error.code, error.headers) == (503, "not_durable",
                                                              {"Retry-After": "1"})  # fmt: skip
    assert error.to_dict()["replicas"] == 0


async def test_a_batch_is_one_script_call_and_one_wait_with_replicas_required() -> None:
    stored = [x for pair in fields().items() for x in pair]  # the second item's replay
    client = StubClient([1], script_answer=[[1, -1, 0, 1], [0, -1, stored]])
    settings = Settings(environment="test", redis_min_replicas=1, redis_wait_timeout_ms=250)
    store = AsyncPaymentStore(client, settings)  # type: ignore[arg-type]

    claimed = await store.claim_many([fields(), fields()], headers={})

    assert [c.created for c in claimed if isinstance(c, Claimed)] == [True, False]
    (commands,) = client.sent
    assert [c[0] for c in commands] == ["EVALSHA", "INCR", "WAIT"]


async def test_a_batch_no_replica_acknowledged_answers_every_item_not_durable() -> None:
    client = StubClient([0], script_answer=[[1, -1, 0, 1], [1, -1, 1, 2]])
    store = AsyncPaymentStore(client, Settings(environment="test", redis_min_replicas=1))  # type: ignore[arg-type]

    claimed = await store.claim_many([fields(), fields()], headers={})

    # Written on the primary but not known to be on a replica: no item claims success.
    assert [type(c) for c in claimed] == [NotDurable, NotDurable]


class SyncPipe:
    def __init__(self, answers: list[list[Any]], log: list[str]) -> None:
        self.answers = answers
        self.log = log

    def __enter__(self) -> SyncPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def incr(self, key: str) -> None:
        self.log.append("INCR")

    def wait(self, replicas: int, timeout: int) -> None:
        self.log.append("WAIT")

    def execute(self) -> list[Any]:
        return self.answers.pop(0)


def test_a_workers_outcome_is_written_again_until_replicated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fakeredis

    log: list[str] = []
    answers = [[1, 1, 0], [0, 2, 0], [0, 3, 1]]  # written; not replicated twice; then held
    settings = Settings(environment="test", redis_min_replicas=1)
    store = PaymentStore(fakeredis.FakeRedis(), settings)
    pipe = SyncPipe(answers, log)
    redis_stub = {
        "pipeline": lambda *a, **k: pipe,
        "publish": lambda self, channel, message: log.append(f"PUBLISH {message}"),
    }
    monkeypatch.setattr(store, "_redis", type("R", (), redis_stub)())
    monkeypatch.setitem(store._scripts, "finish", lambda keys, args, client: log.append("FINISH"))
    monkeypatch.setattr("shared.store.payment_store.time.sleep", lambda s: log.append(f"sleep {s}"))

    done = store.finish("pay_x", status=Status.SUCCEEDED, fields={}, outcome_field="succeeded|")

    assert done is True  # the first write was this call's, though replicated later
    # Waiters hear of it only once a replica holds it.
    assert log == ["FINISH", "INCR", "WAIT", "sleep 0.1", "FINISH", "INCR", "WAIT", "sleep 0.2",
                   "FINISH", "INCR", "WAIT", "PUBLISH pay_x"]  # fmt: skip


# --- a plain URL's demoted primary (ElastiCache's endpoint moved by DNS) ------------------


def test_readonly_from_a_demoted_primary_reconnects_instead_of_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis.connection
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ReadOnlyError

    from shared.settings.redis_url import PrimaryConnection, PrimarySSLConnection

    closed: list[str] = []

    def readonly(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyError("You can't write against a read only replica.")

    monkeypatch.setattr(redis.connection.Connection, "read_response", readonly)
    for cls in (PrimaryConnection, PrimarySSLConnection):
        connection = cls()
        name = cls.__name__
        monkeypatch.setattr(connection, "disconnect", lambda *a, n=name: closed.append(n))
        with pytest.raises(RedisConnectionError, match="READONLY"):
            connection.read_response()
    assert closed == ["PrimaryConnection", "PrimarySSLConnection"]

    plain = sync_redis(Settings(environment="test", redis_url="redis://h:6379/0"))
    assert plain.connection_pool.connection_class is PrimaryConnection
    tls = async_redis(Settings(environment="test", redis_url="rediss://h:6379/0"))
    assert tls.connection_pool.connection_class.__name__ == "AsyncPrimarySSLConnection"
    unix = sync_redis(Settings(environment="test", redis_url="unix:///tmp/r.sock"))
    assert unix.connection_pool.connection_class is redis.connection.UnixDomainSocketConnection


async def test_the_async_twin_reconnects_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.asyncio.connection
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ReadOnlyError

    from shared.settings.redis_url import AsyncPrimaryConnection

    closed: list[bool] = []

    async def readonly(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyError("You can't write against a read only replica.")

    async def disconnect(*args: Any) -> None:
        closed.append(True)

    monkeypatch.setattr(redis.asyncio.connection.Connection, "read_response", readonly)
    connection = AsyncPrimaryConnection()
    monkeypatch.setattr(connection, "disconnect", disconnect)
    with pytest.raises(RedisConnectionError, match="READONLY"):
        await connection.read_response()
    assert closed == [True]


def test_the_broker_reconnects_on_readonly_and_the_sentinel_one_keeps_its_connections() -> None:
    from kombu.transport import redis as kombu_redis

    from shared.settings.redis_url import PrimaryConnection
    from worker.transport import Channel, SentinelChannel

    assert Channel.connection_class is PrimaryConnection
    assert SentinelChannel.connection_class is kombu_redis.SentinelChannel.connection_class


# --- the calls of one tick share one pipeline and one WAIT ---------------------------------


class BatchPipe:
    def __init__(self, client: BatchClient) -> None:
        self.client = client
        self.shas: list[str] = []
        self.tail: list[str] = []

    def evalsha(self, sha: str, numkeys: int, *rest: Any) -> None:
        self.shas.append(str(rest[0]))  # the first key names the call

    def incr(self, key: str) -> None:
        self.tail.append("INCR")

    def wait(self, replicas: int, timeout: int) -> None:
        self.tail.append("WAIT")

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert raise_on_error is False
        self.client.batches.append(list(self.shas))
        answers = [self.client.answer(name) for name in self.shas]
        return [*answers, 1, self.client.acked.pop(0)]


class BatchClient:
    def __init__(self, acked: list[int], noscript_once: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.acked = acked
        self.batches: list[list[str]] = []
        self.noscript = set(noscript_once)
        self.loaded = 0

    def answer(self, name: str) -> Any:
        from redis.exceptions import NoScriptError, ResponseError

        if name in self.noscript:
            self.noscript.discard(name)
            return NoScriptError("NOSCRIPT No matching script.")
        if name == "broken":
            return ResponseError("ERR boom")
        return f"ok:{name}"

    def pipeline(self, transaction: bool = True) -> BatchPipe:
        assert transaction is False
        return BatchPipe(self)

    async def script_load(self, source: str) -> str:
        self.loaded += 1
        return "sha"


async def test_calls_of_one_tick_share_one_pipeline_and_one_wait() -> None:
    import asyncio

    from redis.exceptions import ResponseError

    from shared.store.replicated_writes import ReplicatedScript

    client = BatchClient([1])
    script = ReplicatedScript(client, "return 1", replicas=1, timeout_ms=100)  # type: ignore[arg-type]

    answers = await asyncio.gather(
        script(keys=["a"]), script(keys=["broken"]), script(keys=["c"]), return_exceptions=True
    )

    assert client.batches == [["a", "broken", "c"]]
    assert answers[0] == "ok:a"
    assert answers[2] == "ok:c"
    assert isinstance(answers[1], ResponseError)  # its own error, the others unharmed


async def test_too_few_replicas_fail_every_call_of_the_batch_as_not_durable() -> None:
    import asyncio

    from shared.store.replicated_writes import ReplicatedScript

    client = BatchClient([0])
    script = ReplicatedScript(client, "return 1", replicas=1, timeout_ms=100)  # type: ignore[arg-type]

    answers = await asyncio.gather(script(keys=["a"]), script(keys=["b"]), return_exceptions=True)

    assert all(isinstance(a, NotDurable) for a in answers)


async def test_noscript_on_a_new_primary_loads_and_reruns_only_the_refused_calls() -> None:
    import asyncio

    from shared.store.replicated_writes import ReplicatedScript

    client = BatchClient([1, 1], noscript_once={"b"})
    script = ReplicatedScript(client, "return 1", replicas=1, timeout_ms=100)  # type: ignore[arg-type]

    answers = await asyncio.gather(script(keys=["a"]), script(keys=["b"]))

    assert list(answers) == ["ok:a", "ok:b"]
    assert client.batches == [["a", "b"], ["b"]]  # "a" is not written twice
    assert client.loaded == 1


def test_make_run_asks_the_sentinels_whether_redis_answers() -> None:
    from devtools.processes import redis_reachable

    # Nothing listens on port 1: no Sentinel, so no primary, so make run starts its own Redis.
    assert redis_reachable("redis+sentinel://127.0.0.1:1,127.0.0.1:1/payments/0") is False
    assert redis_reachable("redis+sentinel://h1:26379") is False  # malformed: not reachable
