"""Exactly-once charging under injected faults, against real processes.

Each scenario breaks something for real (Stripe answers through the fault proxy, workers and
Redis are signalled) and then counts what the customer was actually charged on the emulator.
Figures (attempts, recovery times) are printed with -s and written up in docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devtools.demo import create_test_customer
from devtools.processes import ProcessGroup
from devtools.stripe_emulator import THREE_D_SECURE_CARD
from shared.celery_message import task_message
from shared.store.keys import DEAD_LETTERS, record_key
from shared.store.stripe_budget_store import StripeBudgetStore
from tests.integration.stack import Stack, final, pay
from tests.support import (
    CLIENT_QUEUE,
    STRIPE_KEY,
    WEBHOOK_SECRET,
    StripeAdmin,
    stripe_event,
    stripe_signature,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PI_PATH = "/v1/payment_intents"
# Faults aimed at the create alone: the list the retries reconcile through has the same path.
CREATE = {"method": "POST", "path": PI_PATH}
FAST_RETRIES = {
    "CHARGE_RETRY_BACKOFF_SECONDS": "0.2",
    "CHARGE_RETRY_BACKOFF_MAX_SECONDS": "2",
    "CHARGE_MAX_RETRIES": "4",
    "STRIPE_MAX_RPS": "0",
    # The recovery sweep's net, tightened from 10 minutes so scenario 5 can show it at work:
    # a message popped by a worker just as Redis died is lost by the transport, not by us.
    "SWEEP_STALE_SECONDS": "45",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    group = ProcessGroup(tmp_path_factory.mktemp("fault-logs"))
    try:
        env = {**FAST_RETRIES, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
        yield Stack(group, tmp_path_factory.mktemp("fault-redis"), env).start(workers=2)
    finally:
        group.stop_all()


@pytest.fixture
def stripe(stack: Stack) -> Iterator[StripeAdmin]:
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with httpx.Client(base_url=stack.emulator_url, headers=headers, timeout=30) as http:
        http.delete("/_config/data").raise_for_status()
        stack.proxy_reset(forget=True)
        yield StripeAdmin(http)
    stack.proxy_reset()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.api() as client:
        yield client


def is_create(entry: dict[str, Any]) -> bool:
    return bool(entry["method"] == "POST" and entry["path"] == PI_PATH)


def intent_posts(stack: Stack, payment_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in stack.proxy_log()
        if e["method"] == "POST" and e["path"] == PI_PATH and e["idempotency_key"] and
        e["idempotency_key"].startswith(payment_id)
    ]  # fmt: skip


def test_1_a_burst_of_429_and_5xx_is_retried_with_one_key_and_charges_once(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    stack.proxy(
        fail=[
            {**CREATE, "status": 429, "retry_after": 1},
            {**CREATE, "status": 503, "should_retry": True},
            {**CREATE, "status": 500},
            {**CREATE, "status": 502},
        ]
    )

    response = pay(api, customer, wait=30)

    assert response.status_code == 200
    payment_id = response.json()["id"]
    posts = intent_posts(stack, payment_id)
    assert len(posts) == 5
    assert {p["idempotency_key"] for p in posts} == {f"{payment_id}:charge"}
    assert len(stripe.charges(customer)) == 1
    print(f"\n[1] 4 injected failures, {len(posts)} attempts, 1 charge")


def test_1b_a_decline_is_never_retried(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer(card="pm_card_chargeCustomerFail")

    response = pay(api, customer, wait=30)

    assert response.status_code == 402
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("card_error", "card_declined")
    assert len(intent_posts(stack, error["payment_id"])) == 1


def test_1c_stripe_should_retry_false_is_final(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    stack.proxy(fail=[{**CREATE, "status": 500, "should_retry": False}])

    response = pay(api, customer, wait=30)

    assert response.status_code == 502
    assert len(intent_posts(stack, response.json()["error"]["payment_id"])) == 1
    assert stripe.charges(customer) == []


def test_2_an_answer_lost_after_stripe_charged_is_adopted_not_recharged(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    stack.proxy(drop=1)

    response = pay(api, customer, wait=30)

    assert response.status_code == 200
    outcomes = [p["outcome"] for p in intent_posts(stack, response.json()["id"])]
    assert outcomes == ["forwarded_then_dropped"]  # the retry looked first, and found it
    (charge,) = stripe.charges(customer)
    assert charge["payment_intent"] == response.json()["payment_intent"]


def _kill_mid_charge(stack: Stack, api: httpx.Client, customer: str, sig: int) -> tuple[str, str]:
    stack.proxy(latency_ms=3000)
    payment_id = pay(api, customer).json()["id"]
    holder = stack.worker_holding(payment_id, ["w1", "w2"])
    deadline = time.monotonic() + 30
    while not intent_posts(stack, payment_id):
        assert time.monotonic() < deadline, "the charge never reached Stripe"
        time.sleep(0.05)
    stack.signal_worker(holder, sig)
    return payment_id, holder


def test_3_a_worker_killed_mid_charge_is_replaced_and_charges_once(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    killed_at = time.monotonic()
    payment_id, holder = _kill_mid_charge(stack, api, customer, signal.SIGKILL)
    stack.proxy(latency_ms=0)
    try:
        outcome = final(api, payment_id, timeout=180)
        recovered_in = time.monotonic() - killed_at
    finally:
        stack.start_worker(holder)

    assert outcome["status"] == "succeeded"
    assert len(stripe.charges(customer)) == 1
    print(f"\n[3] worker {holder} SIGKILLed mid-charge; completed by the other in "
          f"{recovered_in:.0f}s; 1 charge")  # fmt: skip


def test_4_a_worker_stopped_mid_charge_finishes_it_first(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    stopped_at = time.monotonic()
    payment_id, holder = _kill_mid_charge(stack, api, customer, signal.SIGTERM)
    exited_in = time.monotonic() - stopped_at
    try:
        outcome = api.get(f"/payments/{payment_id}").json()
        log = stack.worker_log(holder).read_text()
    finally:
        stack.proxy(latency_ms=0)
        stack.start_worker(holder)

    assert outcome["status"] == "succeeded"  # recorded before the worker exited
    assert any('"charge.succeeded"' in line and payment_id in line for line in log.splitlines())
    assert len(stripe.charges(customer)) == 1
    print(f"\n[4] worker {holder} SIGTERMed mid-charge; finished and exited in {exited_in:.1f}s")


def test_5_redis_killed_with_accepted_payments_loses_none_and_doubles_none(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    stack.proxy(latency_ms=300)
    ids = [pay(api, customer, amount=f"{n}.00").json()["id"] for n in range(1, 16)]
    assert len(set(ids)) == 15

    stack.kill_redis()
    killed_at = time.monotonic()
    started = time.monotonic()
    with stack.api(timeout=10) as client:
        refused = pay(client, customer)
        refused_in = time.monotonic() - started
        not_ready = client.get("/readyz")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "redis_unavailable"
    assert not_ready.status_code == 503

    time.sleep(2)
    stack.start_redis()
    stack.proxy(latency_ms=0)
    outcomes = [final(api, payment_id, timeout=240) for payment_id in ids]
    recovered_in = time.monotonic() - killed_at

    assert [o["status"] for o in outcomes] == ["succeeded"] * 15
    charges = stripe.charges(customer)
    assert sorted(c["amount"] for c in charges) == [n * 100 for n in range(1, 16)]
    print(f"\n[5] Redis SIGKILLed with 15 accepted; POST answered 503 in {refused_in:.2f}s; "
          f"all 15 charged once, {recovered_in:.0f}s after the kill")  # fmt: skip


def test_6_stripe_down_for_good_fails_the_payment_and_an_operator_replays_it(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    stack.proxy(fail=[{**CREATE, "status": 503, "count": 1000}])

    accepted = pay(api, customer).json()
    outcome = final(api, accepted["id"])

    assert outcome["status"] == "failed"
    assert outcome["error"]["code"] == "stripe_unavailable"
    assert "not charged" in outcome["error"]["message"]
    assert len(intent_posts(stack, accepted["id"])) == 5  # CHARGE_MAX_RETRIES=4, then stop
    env = {**stack.env}
    listed = _dead_letters(env, "list")
    assert accepted["id"] in listed

    stack.proxy_reset()
    replayed = _dead_letters(env, "replay", "--all")
    assert f"requeued {accepted['id']}" in replayed
    assert final(api, accepted["id"])["status"] == "succeeded"
    assert accepted["id"] not in _dead_letters(env, "list")
    assert len(stripe.charges(customer)) == 1


def _dead_letters(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "worker.dead_letters", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_7_an_outcome_lost_with_the_key_forgotten_at_once_is_reconciled_not_recharged(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    # Stripe forgets the key the moment the answer is lost: only reconciliation can tell.
    customer = stripe.customer()
    stack.proxy(drop=1, drop_forgets=True)

    response = pay(api, customer, wait=30)

    assert response.status_code == 200
    outcomes = [p["outcome"] for p in intent_posts(stack, response.json()["id"])]
    assert outcomes == ["forwarded_then_dropped"]  # adopted: no second create
    (charge,) = stripe.charges(customer)
    assert charge["payment_intent"] == response.json()["payment_intent"]


def test_8_the_same_message_delivered_twice_charges_once(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    stack.proxy(latency_ms=1500)
    payment_id = pay(api, customer).json()["id"]
    duplicate = task_message(
        task_name="payments.charge", task_id=payment_id, args=(payment_id,), queue="payments"
    )
    client = stack.redis()
    client.lpush("payments", duplicate)  # while the first delivery is being charged
    outcome = final(api, payment_id)
    client.lpush("payments", duplicate)  # and once more after it finished
    stack.wait_until_idle()  # every delivery taken and acknowledged
    stack.proxy(latency_ms=0)

    assert outcome["status"] == "succeeded"
    assert len(stripe.charges(customer)) == 1
    assert len(intent_posts(stack, payment_id)) == 1


def test_rate_limit_is_shared_by_all_workers(tmp_path_factory: pytest.TempPathFactory) -> None:
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with (
        Stack.running(tmp_path_factory, "rate", {"STRIPE_MAX_RPS": "10"}, workers=2) as stack,
        httpx.Client(base_url=stack.emulator_url, headers=headers) as http,
        stack.api() as api,
    ):
        customer = create_test_customer(http)
        ids = [pay(api, customer, amount="1.00").json()["id"] for _ in range(30)]
        outcomes = [final(api, payment_id) for payment_id in ids]
        calls = sorted(e["time"] for e in stack.proxy_log())

    assert [o["status"] for o in outcomes] == ["succeeded"] * 30  # nothing dropped
    busiest = max(sum(1 for t in calls if start <= t < start + 1.0) for start in calls)
    assert busiest <= 11  # 10/s, +1 for a window that holds both ends
    span = calls[-1] - calls[0]
    print(f"\n[rate] {len(calls)} Stripe calls from 2 workers in {span:.1f}s "
          f"({len(calls) / span:.1f}/s), busiest second {busiest}")  # fmt: skip


def test_9_charged_then_stripe_refuses_every_write_ends_succeeded_not_failed(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    # The charge lands and its answer is lost (Stripe forgets the key too); from then on every
    # write is refused with 503 until the retry budget is spent. Reads still answer.
    stack.proxy(drop=1, drop_forgets=True, then_fail=[{**CREATE, "status": 503, "count": 100}])

    accepted = pay(api, customer).json()
    outcome = final(api, accepted["id"], timeout=120)

    assert outcome["status"] == "succeeded"
    (charge,) = stripe.charges(customer)
    assert charge["payment_intent"] == outcome["payment_intent"]
    print(f"\n[9] charged, answer lost, writes refused: {outcome['status']}, 1 charge")


def test_10_an_outcome_stripe_cannot_tell_is_unknown_until_it_can(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {**FAST_RETRIES, "MAINTENANCE_INTERVAL_SECONDS": "1", "RECONCILE_BACKOFF_SECONDS": "1"}
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with (
        Stack.running(tmp_path_factory, "unknown", env, workers=1) as stack,
        httpx.Client(base_url=stack.emulator_url, headers=headers) as http,
        stack.api() as api,
    ):
        stripe = StripeAdmin(http)
        customer = stripe.customer()
        # Charged, answer lost, then Stripe answers nothing at all, reads included.
        stack.proxy(drop=1, drop_forgets=True, then_fail=[{"status": 503, "count": 2_000}])
        waited = pay(api, customer, wait=30)
        payment_id = waited.json()["id"]
        during = api.get(f"/payments/{payment_id}").json()
        assert len(stripe.charges(customer)) == 1  # charged, though nobody could see it

        stack.proxy_reset()  # Stripe is back
        started = time.monotonic()
        outcome = during
        while outcome["status"] == "unknown" and time.monotonic() - started < 60:
            time.sleep(0.2)
            outcome = api.get(f"/payments/{payment_id}").json()
        settled_in = time.monotonic() - started
        charges = stripe.charges(customer)

    assert waited.status_code == 202
    assert waited.json()["status"] == "unknown"
    assert during["status"] == "unknown"
    assert during["error"]["code"] == "outcome_unknown"
    assert "not charged" not in during["error"]["message"]
    assert outcome["status"] == "succeeded"
    assert "error" not in outcome or outcome["error"] is None
    (charge,) = charges
    assert charge["payment_intent"] == outcome["payment_intent"]
    print(f"\n[10] outcome unknown while Stripe was down; reconciled {settled_in:.1f}s after it "
          "came back: succeeded, 1 charge")  # fmt: skip


def test_11_a_retry_after_redis_lost_everything_reaches_stripe_with_the_same_key(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    key = {"Idempotency-Key": f"order-{time.monotonic_ns()}"}
    first = pay(api, customer, wait=30, headers=key)
    assert first.status_code == 200

    stack.redis().flushall()  # a failover to a stale replica, a lost AOF tail, an operator
    again = pay(api, customer, wait=30, headers=key)

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["payment_intent"] == first.json()["payment_intent"]
    (charge,) = stripe.charges(customer)
    assert charge["payment_intent"] == first.json()["payment_intent"]
    print("\n[11] paid, FLUSHALL, same key again: same payment id and PaymentIntent, 1 charge")


@pytest.mark.timeout(900)  # five minutes of backlog at the cap, by design
def test_12_a_backlog_under_the_default_sized_fleet_and_a_cap_drains_with_nothing_failed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    count, cap = 1_500, 10
    # CLIENT_MAX_RPS=0: one test client stands in for the many that would send such a burst.
    env = {"STRIPE_MAX_RPS": str(cap), "WORKER_CONCURRENCY": "128", "LOG_LEVEL": "INFO",
           "CLIENT_MAX_RPS": "0"}  # fmt: skip
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with (
        Stack.running(tmp_path_factory, "backlog", env, workers=2) as stack,
        httpx.Client(base_url=stack.emulator_url, headers=headers) as http,
        stack.api(timeout=60) as api,
    ):
        customer = create_test_customer(http)
        stack.proxy(latency_ms=50)  # Stripe answering every call in 50 ms
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: pay(api, customer, amount="1.00"), range(count)))
        assert {r.status_code for r in responses} == {202}
        ids = [r.json()["id"] for r in responses]
        client = stack.redis()
        deadline = time.monotonic() + count / (cap / 2) * 1.6 + 60
        while True:
            statuses = Counter(s.decode() for s in _statuses(client, ids))
            if statuses["succeeded"] + statuses["failed"] + statuses["unknown"] == count:
                break
            assert time.monotonic() < deadline, f"not drained: {statuses}"
            time.sleep(5)
        creates = sorted(e["time"] for e in stack.proxy_log() if is_create(e))
        dead = client.zcard(DEAD_LETTERS)

    assert statuses == Counter({"succeeded": count})
    assert dead == 0
    assert len(creates) == count  # one create a payment, no echo, no double
    rate = (count - 1) / (creates[-1] - creates[0])
    assert rate >= 0.9 * cap / 2  # about cap/2 charges/s: two calls a charge
    print(f"\n[12] {count} payments, cap {cap} calls/s, 2 workers x 128 threads: all "
          f"succeeded, 0 dead letters, drained at {rate:.2f} charges/s")  # fmt: skip


def _statuses(client: Any, ids: list[str]) -> list[bytes]:
    with client.pipeline(transaction=False) as pipe:
        for payment_id in ids:
            pipe.hget(record_key(payment_id), "status")
        return list(pipe.execute())


def test_13_a_message_lost_in_transit_is_recovered_and_a_backlog_is_not_echoed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {
        **FAST_RETRIES,
        "SWEEP_STALE_SECONDS": "30",
        "MAINTENANCE_INTERVAL_SECONDS": "2",
        "WORKER_CONCURRENCY": "4",
    }
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with (
        Stack.running(tmp_path_factory, "sweep", env, workers=0) as stack,
        httpx.Client(base_url=stack.emulator_url, headers=headers) as http,
        stack.api() as api,
    ):
        customer = create_test_customer(http)
        lost = pay(api, customer, amount="9.99").json()["id"]
        client = stack.redis()
        client.rpop(CLIENT_QUEUE)  # popped by a worker that died before recording it
        ids = [pay(api, customer, amount="1.00").json()["id"] for _ in range(300)]
        time.sleep(31)  # the whole backlog is now older than the sweep's age
        stack.proxy(latency_ms=200)  # 4 threads x 2 calls x 0.2 s: a backlog of ~15 s more
        stack.start_worker("w1")
        outcomes = [final(api, payment_id, timeout=180) for payment_id in [*ids, lost]]
        log = stack.worker_log("w1").read_text()
        creates = Counter(e["idempotency_key"] for e in stack.proxy_log() if is_create(e))

    assert {o["status"] for o in outcomes} == {"succeeded"}
    requeued = [line for line in log.splitlines() if '"sweep.requeued"' in line]
    assert len(requeued) == 1
    assert lost in requeued[0]
    assert ids[0] not in requeued[0]
    assert set(creates.values()) == {1}
    assert len(creates) == 301
    print(
        "\n[13] 300 payments queued 31 s (past the 30 s sweep age) + 1 message popped and "
        f"dropped: {len(requeued)} sweep push (the dropped one), 301 creates, all succeeded"
    )


def test_14_a_wait_for_the_budget_longer_than_the_visibility_timeout_is_not_redelivered(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {
        "STRIPE_MAX_RPS": "10",
        "STRIPE_TIMEOUT_SECONDS": "5",
        "VISIBILITY_TIMEOUT_SECONDS": "25",
        "CHARGE_RETRY_BACKOFF_MAX_SECONDS": "10",
        "LOG_LEVEL": "INFO",
    }
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with (
        Stack.running(tmp_path_factory, "visibility", env, workers=2) as stack,
        httpx.Client(base_url=stack.emulator_url, headers=headers) as http,
        stack.api() as api,
    ):
        customer = create_test_customer(http)
        # Other workers booked the next 40 s of the Stripe budget.
        StripeBudgetStore(stack.redis()).book(
            ["GET /v1/events"] * 400, {"global": 10, "GET /v1/events": 25}
        )
        started = time.monotonic()
        payment_id = pay(api, customer).json()["id"]
        outcome = final(api, payment_id, timeout=120)
        waited = time.monotonic() - started
        logs = stack.worker_log("w1").read_text() + stack.worker_log("w2").read_text()

    assert outcome["status"] == "succeeded"
    assert waited > 35  # it waited its turn, well past the 25 s visibility timeout...
    starts = [line for line in logs.splitlines() if '"charge.started"' in line]
    assert len(starts) == 1  # ...and its message was never handed to another worker
    assert '"charge.leased_elsewhere"' not in logs
    print(f"\n[14] waited {waited:.0f}s for the budget (visibility timeout 25 s): one delivery")


def test_15_a_callback_lost_in_transit_is_sent_again_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A callback message popped from the callbacks queue and dropped (Redis died between the
    transport's BRPOP and its unacked entry) is pushed again by the callbacks' recovery sweep
    and reaches its receiver once; the other callback, never lost, is never pushed again."""
    import base64
    import secrets

    from shared.callbacks.events import event_id
    from shared.store.keys import CALLBACKS_PENDING, UNACKED
    from tests.integration.callback_receiver import CallbackReceiver
    from tests.support import callback_secret, wait_until

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {
        **FAST_RETRIES,
        "CALLBACK_SIGNING_SECRETS": secret,
        "CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",  # the receiver listens on 127.0.0.1
        "CALLBACK_SWEEP_STALE_SECONDS": "2",
        "MAINTENANCE_INTERVAL_SECONDS": "1",
    }
    with (
        Stack.running(tmp_path_factory, "callback-sweep", env, workers=0) as stack,
        stack.stripe_admin() as stripe,
        stack.api() as api,
        CallbackReceiver({"client": callback_secret(api)}, fail_first=False) as receiver,
    ):
        stack.start_worker("w1", queues="payments")  # charges; callbacks wait in their queue
        client = stack.redis()
        customer = stripe.customer()

        def paid() -> str:
            body = {"account_id": customer, "amount": "5.00", "callback_url": receiver.url}
            answer = api.post("/payments", params={"wait": 20}, json=body).json()
            assert answer["status"] == "succeeded"
            return str(answer["id"])

        lost = paid()
        wait_until(lambda: client.llen("callbacks") == 1, timeout=10, what="lost's callback")
        client.rpop("callbacks")  # popped by a worker whose Redis died before its unacked entry
        kept = paid()
        stack.start_worker("w2", queues="callbacks")
        lost_evt = event_id("payment.succeeded", lost)
        kept_evt = event_id("payment.succeeded", kept)
        wait_until(lambda: {d["id"] for d in receiver.deliveries} >= {lost_evt, kept_evt},
                   timeout=60, what="both callbacks delivered")  # fmt: skip
        wait_until(
            lambda: client.zcard(CALLBACKS_PENDING) == 0 and client.llen("callbacks") == 0
            and client.hlen(UNACKED) == 0,
            timeout=30, what="every callback settled",
        )  # fmt: skip
        logs = stack.worker_log("w1").read_text() + stack.worker_log("w2").read_text()

    assert sorted(d["id"] for d in receiver.deliveries) == sorted([lost_evt, kept_evt])  # once
    assert all(d["verified"] for d in receiver.deliveries)
    assert {d["data"]["id"] for d in receiver.deliveries} == {lost, kept}
    requeued = [line for line in logs.splitlines() if '"sweep.callbacks_requeued"' in line]
    assert len(requeued) == 1
    assert lost_evt in requeued[0]
    assert kept_evt not in requeued[0]
    print(f"\n[15] a callback message popped and dropped: 1 sweep push ({lost_evt}), each of 2 "
          "callbacks delivered once")  # fmt: skip


def test_16_an_event_whose_object_stripe_cannot_give_is_retried_not_dropped(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    """Stripe's event is taken once (deduplicated), so Stripe's own redelivery will not bring
    it back: when the object cannot be fetched (503), its task retries until it can."""
    customer = stripe.customer()
    paid = pay(api, customer, amount="20.00", wait=30).json()
    assert paid["status"] == "succeeded"
    charge_path = f"/v1/charges/{paid['charge']}"
    stripe.http.post("/v1/refunds", data={"charge": paid["charge"]}).raise_for_status()
    body = stripe_event("charge.refunded", stripe.http.get(charge_path).json())
    stack.proxy(fail=[{"status": 503, "path": charge_path, "should_retry": True, "count": 3}])
    since = len(stack.proxy_log())

    answer = httpx.post(
        f"{stack.api_url}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_signature(body, WEBHOOK_SECRET),
                 "Content-Type": "application/json"},
    )  # fmt: skip

    assert answer.status_code == 200

    def refunded() -> dict[str, Any] | None:
        payment: dict[str, Any] = api.get(f"/payments/{paid['id']}").json()
        return payment if payment["status"] == "refunded" else None

    done = wait_until(refunded, timeout=60, what="the refund made in Stripe applied")
    assert done["amount_refunded"] == "20.00"
    fetches = [e["outcome"] for e in stack.proxy_log()[since:] if e["path"] == charge_path]
    assert fetches == ["injected 503"] * 3 + ["forwarded 200"]
    print("\n[16] the event's object refused 3 times (503): fetched a 4th time, applied")


def test_17_a_3ds_payment_whose_answer_was_lost_and_key_forgotten_is_adopted_not_made_again(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    """A PaymentIntent awaiting 3-D Secure has made no charge: the retry finds it among the
    customer's PaymentIntents, not its charges, and adopts it."""
    customer = stripe.customer(card=THREE_D_SECURE_CARD)
    stack.proxy(drop=1, drop_forgets=True)

    response = pay(api, customer, wait=30)

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "authentication_required"
    payment = api.get(f"/payments/{error['payment_id']}").json()
    assert payment["status"] == "requires_action"
    outcomes = [p["outcome"] for p in intent_posts(stack, payment["id"])]
    assert outcomes == ["forwarded_then_dropped"]  # adopted: no second create
    (intent,) = stripe.payment_intents(customer)
    assert intent["id"] == payment["payment_intent"]
    assert intent["status"] == "requires_action"
    assert payment["client_secret"] == intent["client_secret"]
    assert stripe.charges(customer) == []
    print("\n[17] 3-D Secure, answer lost, key forgotten: requires_action adopted, "
          "1 PaymentIntent")  # fmt: skip


def test_18_a_capture_whose_answer_was_lost_is_reconciled_and_captures_once(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    held = api.post(
        "/payments",
        json={"account_id": customer, "amount": "42.99", "capture_method": "manual"},
        params={"wait": 30},
    ).json()
    assert held["status"] == "requires_capture"
    capture_path = f"{PI_PATH}/{held['payment_intent']}/capture"
    stack.proxy(drop=1)  # Stripe captures; its answer never reaches the worker

    response = api.post(
        f"/payments/{held['id']}/capture", json={"amount": "30.00"}, params={"wait": 30}
    )

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["amount_captured"]) == ("succeeded", "30.00")
    captures = [e for e in stack.proxy_log() if e["method"] == "POST" and e["path"] == capture_path]
    # One capture sent: the retry retrieved the PaymentIntent first, and found it captured.
    assert [(e["outcome"], e["idempotency_key"]) for e in captures] == [
        ("forwarded_then_dropped", f"{held['id']}:capture")
    ]
    intent = stripe.http.get(f"{PI_PATH}/{held['payment_intent']}").json()
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 3000)
