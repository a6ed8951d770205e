"""Signed callbacks out: the outbox (pushed by the script that changes the state), Standard
Webhooks signatures, retries then a dead letter, and the SSRF rules. Redis is fakeredis, the
receiver an httpx.MockTransport."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable
from typing import Any

import fakeredis
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.callbacks.events import event_id, payment_callback
from shared.callbacks.signing import derived_secret, sign
from shared.callbacks.url_rules import check_callback_url
from shared.errors import CallbackUrlRefused
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.callback_store import CallbackStore
from shared.store.keys import CALLBACK_DEAD_LETTERS, CALLBACK_RETRIES
from shared.store.lifecycle_store import LifecycleStore, Transition
from tests.worker.conftest import (
    PUBLIC_ADDRESS,
    FileCallback,
    MakeSender,
    Receiver,
    SeedPayment,
)
from worker.callback_delivery import Callback, CallbackSender
from worker.dead_letters import main as dead_letters

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
PAY = "pay_" + "d" * 24
SETTINGS = Settings(
    environment="test",
    callback_signing_secrets=f"{SECRET},{OLD_SECRET}",
    callback_max_attempts=3,
)


def callbacks_queued(redis: fakeredis.FakeRedis) -> list[list[Any]]:
    messages = [json.loads(m) for m in redis.lrange("callbacks", 0, -1)]
    return [[m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]] for m in messages]


# --- the outbox -------------------------------------------------------------------------------


def test_the_charge_outcome_pushes_its_callback_in_the_same_step(
    redis: fakeredis.FakeRedis, seed_payment: SeedPayment
) -> None:
    seed_payment(PAY, Status.PROCESSING, callback_url="https://shop.example.com/hooks")
    store = PaymentStore(redis, SETTINGS)

    assert store.finish(PAY, status=Status.SUCCEEDED, fields={"charge": "ch_1"})
    assert not store.finish(PAY, status=Status.FAILED, fields={})  # no change: no callback

    ((task, args),) = callbacks_queued(redis)
    assert task == "payments.callback"
    assert args[1:4] == ["payment.succeeded", PAY, ""]


def test_no_endpoint_no_callback(redis: fakeredis.FakeRedis, seed_payment: SeedPayment) -> None:
    seed_payment(PAY, Status.PROCESSING)
    PaymentStore(redis, SETTINGS).finish(PAY, status=Status.SUCCEEDED, fields={})
    assert callbacks_queued(redis) == []


def test_a_move_pushes_its_callback_and_a_refused_move_none(
    redis: fakeredis.FakeRedis, seed_payment: SeedPayment
) -> None:
    seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.com/hooks")
    store = LifecycleStore(redis, SETTINGS)

    store.transition(PAY, Transition(Status.REQUIRES_ACTION, {}),
                     callback=payment_callback(SETTINGS, PAY, Status.REQUIRES_ACTION))  # fmt: skip
    store.transition(PAY, Transition(Status.DISPUTED, {}),
                     callback=payment_callback(SETTINGS, PAY, Status.DISPUTED))  # fmt: skip

    assert [args[1] for _, args in callbacks_queued(redis)] == ["payment.disputed"]


# --- sending ------------------------------------------------------------------------------------


EVT = event_id("payment.succeeded", PAY)


def event(attempt: int = 1) -> Callback:
    return Callback(EVT, "payment.succeeded", PAY, "", 1_800_000_000_000, attempt)


@pytest.fixture(autouse=True)
def _queued(file_callback: FileCallback) -> None:
    """The event's first attempt is queued and filed, as the state change that made it does
    (what an attempt is checked against: a message not filed for it is a duplicate)."""
    file_callback(SETTINGS, event(1))


def test_a_callback_is_signed_as_standard_webhooks_and_verifies_with_either_secret(
    seed_payment: SeedPayment, receiver: Receiver, make_sender: MakeSender
) -> None:
    """Signed for its client: with the secret derived from each master and the client's name,
    never with a master itself nor another client's secret."""
    seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.com/hooks?x=1",
                 client="shop-a")  # fmt: skip

    assert make_sender(SETTINGS).send(event()) == "delivered"

    (request,) = receiver.requests
    assert request.url.host == PUBLIC_ADDRESS  # the address that was checked
    assert request.headers["host"] == "shop.example.com"
    assert request.extensions["sni_hostname"] == "shop.example.com"
    body = request.content
    headers = dict(request.headers)
    for master in (SECRET, OLD_SECRET):  # a receiver on either side of a rotation
        payload = Webhook(derived_secret(master, "shop-a")).verify(body, headers)
        assert payload["type"] == "payment.succeeded"
        assert payload["data"]["id"] == PAY
        assert payload["data"]["status"] == "succeeded"
        assert "client_secret" not in payload["data"]
    assert headers["webhook-id"] == EVT
    for other in ("whsec_" + base64.b64encode(b"x" * 24).decode(), SECRET, OLD_SECRET,
                  derived_secret(SECRET, "shop-b"), derived_secret(SECRET, "shop-a ")):  # fmt: skip
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(derived_secret(SECRET, "shop-a")).verify(body + b" ", headers)


def test_a_callback_carries_the_payments_metadata_and_description(
    seed_payment: SeedPayment, receiver: Receiver, make_sender: MakeSender
) -> None:
    seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.com/hooks",
                 client="shop-a", description="Order 1001",
                 metadata='{"order_id":"1001"}')  # fmt: skip

    assert make_sender(SETTINGS).send(event()) == "delivered"

    (request,) = receiver.requests
    data = json.loads(request.content)["data"]
    assert data["description"] == "Order 1001"
    assert data["metadata"] == {"order_id": "1001"}


def test_a_captured_authorization_s_callback_says_what_it_took(
    seed_payment: SeedPayment, receiver: Receiver, make_sender: MakeSender
) -> None:
    seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.com/hooks",
                 client="shop-a", capture_method="manual",
                 amount_captured_minor="3000")  # fmt: skip

    assert make_sender(SETTINGS).send(event()) == "delivered"

    (request,) = receiver.requests
    data = json.loads(request.content)["data"]
    assert (data["capture_method"], data["amount_captured"]) == ("manual", "30.00")


def test_a_failing_receiver_is_retried_later_then_kept_as_a_dead_letter_and_replayed(
    redis: fakeredis.FakeRedis, seed_payment: SeedPayment, receiver: Receiver,
    make_sender: MakeSender, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.com/hooks")
    receiver.statuses = [500, 503, 502]
    send = make_sender(SETTINGS)

    assert send.send(event(1)) == "retry"
    (held,) = redis.zrange(CALLBACK_RETRIES, 0, -1)
    assert isinstance(held, bytes)
    assert json.loads(base64.b64decode(json.loads(held)["body"]))[0][5] == 2  # attempt 2
    assert CallbackStore(redis, SETTINGS).requeue_due(now=10**12) == 1
    assert redis.llen("callbacks") == 1
    assert send.send(event(2)) == "retry"
    assert CallbackStore(redis, SETTINGS).requeue_due(now=10**12) == 1
    assert send.send(event(3)) == "dead_lettered"
    assert redis.zscore(CALLBACK_DEAD_LETTERS, EVT) is not None

    monkeypatch.setattr("worker.dead_letters.get_settings", lambda: SETTINGS)
    monkeypatch.setattr("worker.dead_letters.sync_redis", lambda settings: redis)
    redis.delete("callbacks")
    assert dead_letters(["replay", EVT]) == 0
    assert redis.zscore(CALLBACK_DEAD_LETTERS, EVT) is None
    ((_, args),) = callbacks_queued(redis)
    assert (args[0], args[5]) == (EVT, 1)  # the same event, a fresh budget


def test_backoff_spans_about_a_day_with_the_defaults() -> None:
    settings = Settings(environment="test")
    send = CallbackSender(None, None, None, settings)  # type: ignore[arg-type]
    attempts = settings.callback_max_attempts
    # Equal jitter: each wait is between half and all of its step, so the whole lies between
    # half and all of about 31 hours.
    total = sum(send.backoff(n) for n in range(1, attempts))
    assert 12 * 3600 < total < 36 * 3600


# Hosts the system's resolver reads as a loopback or private address by themselves (no DNS):
# refused at accept, and at send time for an endpoint kept before the rule (seeded here).
@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "10.7"])
def test_a_host_the_resolver_reads_as_a_private_address_is_refused_at_accept_and_send_time(
    redis: fakeredis.FakeRedis, seed_payment: SeedPayment, receiver: Receiver,
    make_sender: MakeSender, host: str,
) -> None:  # fmt: skip
    url = f"https://{host}/hooks"
    with pytest.raises(CallbackUrlRefused):
        check_callback_url(url, SETTINGS)
    seed_payment(PAY, Status.SUCCEEDED, callback_url=url)

    assert make_sender(SETTINGS, resolve=None).send(event()) == "dead_lettered"

    assert receiver.requests == []
    ((kept_id, kept, _),) = CallbackStore(redis, SETTINGS).dead_letters()
    assert kept_id == EVT
    assert kept["reason"].startswith("refused")


# Addresses off the public internet that a deny list of private ranges let through: shared
# address space (a cloud metadata address among them), IPv4 inside 6to4, NAT64 and IPv4-mapped
# forms. A name that resolves to one is refused when the callback is sent.
NOT_PUBLIC = ["100.100.100.200", "100.64.0.1", "2002:a9fe:a9fe::", "::ffff:127.0.0.1",
              "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
              "224.0.0.1"]  # fmt: skip


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_a_name_resolving_off_the_public_internet_is_refused_at_send_time(
    redis: fakeredis.FakeRedis, seed_payment: SeedPayment, receiver: Receiver,
    make_sender: MakeSender, monkeypatch: pytest.MonkeyPatch, address: str,
) -> None:  # fmt: skip
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
               (family, socket.SOCK_STREAM, 6, "", (address, 443))]  # fmt: skip
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    url = "https://hooks.shop.example.com/x"
    assert check_callback_url(url, SETTINGS)[1] == "hooks.shop.example.com"  # a name: no DNS
    seed_payment(PAY, Status.SUCCEEDED, callback_url=url)

    assert make_sender(SETTINGS, resolve=None).send(event()) == "dead_lettered"

    assert receiver.requests == []  # one answer of the name was enough to refuse it
    ((_, kept, _),) = CallbackStore(redis, SETTINGS).dead_letters()
    assert kept["reason"].startswith("refused")


@pytest.mark.parametrize("url", ["http://exa mple.com/x", "http://shop.example.com/x\r\nX: 1",
                                 "http://shop.example.com/x\x00"])  # fmt: skip
def test_an_endpoint_no_request_can_be_made_for_is_a_dead_letter_not_an_error(
    redis: fakeredis.FakeRedis, seed_payment: SeedPayment, receiver: Receiver,
    make_sender: MakeSender, url: str,
) -> None:  # fmt: skip
    """An endpoint kept before the accept rules refused it: the task ends, the callback is
    kept as a dead letter (an operator can see why), nothing is sent."""
    seed_payment(PAY, Status.SUCCEEDED, callback_url=url)

    assert make_sender(SETTINGS).send(event()) == "dead_lettered"

    assert receiver.requests == []
    ((_, kept, _),) = CallbackStore(redis, SETTINGS).dead_letters()
    assert kept["reason"].startswith("refused")


def test_an_invalid_url_from_the_http_client_is_a_dead_letter(
    redis: fakeredis.FakeRedis, seed_payment: SeedPayment, receiver: Receiver,
    make_sender: MakeSender, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """What the URL rules pass but httpx cannot send (its own InvalidURL) ends the same way."""
    seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.com/hooks")

    def invalid(*args: object, **kwargs: object) -> None:
        raise httpx.InvalidURL("Invalid URL")

    monkeypatch.setattr(httpx.URL, "copy_with", invalid)
    assert make_sender(SETTINGS).send(event()) == "dead_lettered"
    assert receiver.requests == []


def test_the_url_rules_are_checked_again_at_send_time(
    seed_payment: SeedPayment, receiver: Receiver, make_sender: MakeSender
) -> None:
    """CALLBACK_ALLOWED_HOSTS narrowed after the payment was accepted: its endpoint is no
    longer one callbacks may reach."""
    seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.net/hooks")
    narrowed = Settings(environment="test", callback_signing_secrets=SECRET,
                        callback_allowed_hosts=".example.com")  # fmt: skip

    assert make_sender(narrowed).send(event()) == "dead_lettered"
    assert receiver.requests == []


# --- SSRF rules at accept ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "settings"),
    [
        ("ftp://shop.example.com/x", SETTINGS),
        ("http://shop.example.com/x", Settings(environment="production",
                                               stripe_api_key="sk_live_x")),
        ("https://user:pw@shop.example.com/x", SETTINGS),
        ("https://127.0.0.1/x", SETTINGS),
        ("https://10.1.2.3/x", SETTINGS),
        ("https://169.254.169.254/latest/meta-data", SETTINGS),
        ("https://[::1]/x", SETTINGS),
        ("https://[::ffff:127.0.0.1]/x", SETTINGS),
        ("https://localhost:8443/x", SETTINGS),
        ("http://100.100.100.200/latest/meta-data", SETTINGS),
        ("http://100.64.0.1/x", SETTINGS),
        ("http://[2002:a9fe:a9fe::]/x", SETTINGS),
        ("http://[::ffff:127.0.0.1]/x", SETTINGS),
        ("http://[64:ff9b::7f00:1]/x", SETTINGS),
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", SETTINGS),
        ("http://[fe80::1%25eth0]/x", SETTINGS),
        ("http://224.0.0.1/x", SETTINGS),
        ("http://exa mple.com/x", SETTINGS),
        ("http://shop.example.com/x\r\nX-Injected: 1", SETTINGS),
        ("http://shop.example.com/\nx", SETTINGS),
        ("http://shop.example.com/x\x00", SETTINGS),
        ("http://shop.example.com/x\t", SETTINGS),
        ("http://shop%2eexample.com/x", SETTINGS),
        ("http://-shop.example.com/x", SETTINGS),
        ("https://evil.example.net/x", Settings(environment="test",
                                                callback_allowed_hosts=".example.com")),
        ("not a url", SETTINGS),
    ],
)  # fmt: skip
def test_refused_callback_urls(url: str, settings: Settings) -> None:
    with pytest.raises(CallbackUrlRefused):
        check_callback_url(url, settings)


def test_allowed_callback_urls() -> None:
    allowed = Settings(environment="test", callback_allowed_hosts=".example.com")
    assert check_callback_url("https://shop.example.com/h", allowed)[1] == "shop.example.com"
    for url in ("https://93.184.216.34/h", "https://[2606:4700::1]:8443/h",
                "https://[2002:5db8:d822::1]/h", "https://[::ffff:93.184.216.34]/h",
                "https://xn--bcher-kva.example/h?q=a%20b", "https://bücher.example/h"):  # fmt: skip
        assert check_callback_url(url, SETTINGS)[0] == "https"
    private_ok = Settings(environment="test", callback_allow_private_networks=True)
    assert check_callback_url("http://127.0.0.1:9000/h", private_ok) == ("http", "127.0.0.1", 9000)
    assert check_callback_url("http://100.64.0.1/h", private_ok)[1] == "100.64.0.1"


def test_private_networks_are_refused_in_production() -> None:
    with pytest.raises(ValueError, match="CALLBACK_ALLOW_PRIVATE_NETWORKS"):
        Settings(environment="production", stripe_api_key="sk_live_x",
                 callback_allow_private_networks=True)  # fmt: skip


def test_one_signature_per_secret() -> None:
    from datetime import UTC, datetime

    header = sign((SECRET, OLD_SECRET), "evt_1", datetime.now(UTC), "{}")
    assert [part.split(",")[0] for part in header.split(" ")] == ["v1", "v1"]


# --- per-client signing secrets (API_CLIENTS' callback_signing_secrets) -----------------------

CLIENT_SECRET = "whsec_" + base64.b64encode(b"c" * 32).decode()
CLIENT_OLD_SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()


def clients_settings(own: object) -> Settings:
    clients = [
        {"name": "shop-eu", "keys": ["key-eu"], "callback_signing_secrets": own},
        {"name": "shop-us", "keys": ["key-us"]},
    ]
    return Settings(environment="test", callback_signing_secrets=SECRET,
                    api_clients=json.dumps(clients))  # fmt: skip


@pytest.fixture
def delivered_by(
    seed_payment: SeedPayment, receiver: Receiver, make_sender: MakeSender
) -> Callable[[Settings, str], httpx.Request]:
    """The one request a payment of ``client`` makes its callback endpoint receive."""

    def deliver(settings: Settings, client: str) -> httpx.Request:
        seed_payment(PAY, Status.SUCCEEDED, callback_url="https://shop.example.com/hooks",
                     client=client)  # fmt: skip
        assert make_sender(settings).send(event()) == "delivered"
        (request,) = receiver.requests
        return request

    return deliver


@pytest.mark.parametrize(
    "own", [[CLIENT_SECRET, CLIENT_OLD_SECRET], f"{CLIENT_SECRET}, {CLIENT_OLD_SECRET}"]
)
def test_a_client_with_its_own_secrets_gets_callbacks_signed_with_them_not_the_global_one(
    delivered_by: Callable[[Settings, str], httpx.Request], own: object
) -> None:
    request = delivered_by(clients_settings(own), "shop-eu")

    headers = dict(request.headers)
    for secret in (CLIENT_SECRET, CLIENT_OLD_SECRET):  # either side of the client's rotation
        assert Webhook(secret).verify(request.content, headers)["data"]["id"] == PAY
    for other in (SECRET, derived_secret(SECRET, "shop-eu")):
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(request.content, headers)


def test_a_client_without_its_own_secrets_gets_one_derived_from_the_masters(
    delivered_by: Callable[[Settings, str], httpx.Request],
) -> None:
    request = delivered_by(clients_settings([CLIENT_SECRET]), "shop-us")

    headers = dict(request.headers)
    assert Webhook(derived_secret(SECRET, "shop-us")).verify(request.content, headers)
    for other in (SECRET, CLIENT_SECRET, derived_secret(SECRET, "shop-eu")):
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(request.content, headers)


@pytest.mark.parametrize(
    "own",
    [
        "plain-text-not-a-webhook-secret",
        ["whsec_%%%not base64%%%"],
        [CLIENT_SECRET, "whsec_" + base64.b64encode(b"short").decode()],
        {"secret": CLIENT_SECRET},
    ],
)
def test_a_malformed_client_secret_stops_the_start_naming_the_client_not_the_secret(
    own: object,
) -> None:
    from shared.settings.api_clients import ClientConfigError, load

    with pytest.raises(ClientConfigError, match="shop-eu: callback_signing_secrets") as info:
        load(clients_settings(own))
    assert "whsec_" not in str(info.value).replace("whsec_ then", "")
    assert "plain-text" not in str(info.value)


def test_a_clients_secrets_never_show_in_its_repr() -> None:
    from shared.settings.api_clients import load

    eu = next(c for c in load(clients_settings([CLIENT_SECRET])).clients if c.name == "shop-eu")
    assert eu.callback_signing_secrets == (CLIENT_SECRET,)
    assert CLIENT_SECRET not in repr(eu)
