"""GET /payments: a client's own payments from the records, filtered and paged, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest

from api.main import create_app
from shared.payments.payment_records import ms_from_iso
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.keys import client_listed, client_status, record_key
from shared.store.list_store import ListBackfill
from tests.api.test_tenancy import CLIENTS, OTHER, SHOP, auth
from tests.support import RFC3339_ACCEPTED, RFC3339_REFUSED, app_client, payment


def settings() -> Settings:
    return Settings.model_validate(
        {"environment": "test", "redis_url": "redis://fake", "api_clients": json.dumps(CLIENTS)}
    )


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def worker(server: fakeredis.FakeServer) -> PaymentStore:
    """The store a worker moves statuses with, on the API's Redis."""
    return PaymentStore(fakeredis.FakeRedis(server=server), settings())


@pytest.fixture
async def api(server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(), redis=fakeredis.FakeAsyncRedis(server=server))
    async with app_client(app) as client:
        yield client


async def accept(api: httpx.AsyncClient, n: int, *, key: str = SHOP, **body: Any) -> list[str]:
    """n payments of the client with ``key``, oldest first."""
    ids = []
    for i in range(n):
        headers = {**auth(key), "Idempotency-Key": f"{key}-{i}-{body}"}
        response = await api.post("/payments", json=payment(**body), headers=headers)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def end(worker: PaymentStore, payment_id: str, status: Status) -> None:
    """A worker's attempt and its answer: the payment moves through processing to ``status``."""
    worker.start_attempt(payment_id, token="t")
    worker.finish(payment_id, status=status, fields={}, check_at=time.time())


async def listed(api: httpx.AsyncClient, query: str = "", key: str = SHOP) -> dict[str, Any]:
    response = await api.get(f"/payments{query}", headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def every_page(api: httpx.AsyncClient, query: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        after = f"&starting_after={cursor}" if cursor else ""
        body = await listed(api, f"?{query}{after}")
        pages.append([p["id"] for p in body["data"]])
        if not body["has_more"]:
            assert body["next_cursor"] in (None, pages[-1][-1] if pages[-1] else None)
            return pages
        cursor = body["next_cursor"]
        assert cursor == pages[-1][-1]


async def test_a_client_lists_its_own_payments_newest_first(api: httpx.AsyncClient) -> None:
    mine = await accept(api, 3)
    await accept(api, 2, key=OTHER)

    body = await listed(api)

    assert [p["id"] for p in body["data"]] == mine[::-1]
    assert body["object"] == "list"
    assert body["url"] == "/payments"
    assert body["has_more"] is False
    assert body["data"][0]["status"] == "queued"
    assert body["data"][0]["amount"] == "42.99"


@pytest.mark.parametrize(("count", "limit"), [(5, 1), (5, 2), (6, 3), (3, 3), (3, 100)])
async def test_pages_hold_each_payment_once_and_has_more_is_exact(
    api: httpx.AsyncClient, count: int, limit: int
) -> None:
    ids = await accept(api, count)

    pages = await every_page(api, f"limit={limit}")

    assert [i for page in pages for i in page] == ids[::-1]
    assert all(len(page) == limit for page in pages[:-1])
    assert len(pages) == -(-count // limit)


async def test_payments_created_in_the_same_millisecond_are_paged_once_each(
    api: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    ids = await accept(api, 7)
    redis = fakeredis.FakeRedis(server=server)
    same = {pid: 1_000 * int(time.time()) for pid in ids}
    redis.zadd(client_listed("shop"), same)
    redis.zadd(client_status("shop", "queued"), same)

    pages = await every_page(api, "limit=2")

    assert sorted(i for page in pages for i in page) == sorted(ids)
    assert [len(page) for page in pages] == [2, 2, 2, 1]


async def test_a_cursor_not_in_the_callers_list_is_400_resource_missing(
    api: httpx.AsyncClient,
) -> None:
    await accept(api, 1)
    (theirs,) = await accept(api, 1, key=OTHER)

    for cursor in (theirs, "pay_" + "0" * 24):
        response = await api.get(f"/payments?starting_after={cursor}", headers=auth(SHOP))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "resource_missing"
        assert response.json()["error"]["param"] == "starting_after"


async def test_the_status_filter_follows_every_move(
    api: httpx.AsyncClient, worker: PaymentStore
) -> None:
    ids = await accept(api, 6)
    end(worker, ids[0], Status.FAILED)
    end(worker, ids[2], Status.FAILED)
    end(worker, ids[3], Status.SUCCEEDED)
    end(worker, ids[4], Status.UNKNOWN)

    failed = await listed(api, "?status=failed")
    several = await listed(api, "?status=queued,unknown&status=failed")

    assert [p["id"] for p in failed["data"]] == [ids[2], ids[0]]
    assert {p["status"] for p in failed["data"]} == {"failed"}
    assert [p["id"] for p in several["data"]] == [ids[5], ids[4], ids[2], ids[1], ids[0]]
    assert [p["id"] for p in (await listed(api, "?status=succeeded"))["data"]] == [ids[3]]
    assert (await listed(api, "?status=processing"))["data"] == []


async def test_paging_several_statuses_merges_them_newest_first(
    api: httpx.AsyncClient, worker: PaymentStore
) -> None:
    ids = await accept(api, 9)
    for pid in ids[::3]:
        end(worker, pid, Status.FAILED)
    for pid in ids[1::3]:
        end(worker, pid, Status.UNKNOWN)

    pages = await every_page(api, "status=failed,unknown&limit=2")

    wanted = [pid for i, pid in enumerate(ids) if i % 3 != 2]
    assert [i for page in pages for i in page] == wanted[::-1]


@pytest.mark.parametrize("status", [s.value for s in Status])
async def test_every_status_of_the_table_is_a_filter(api: httpx.AsyncClient, status: str) -> None:
    await accept(api, 1)
    body = await listed(api, f"?status={status}")
    assert len(body["data"]) == (1 if status == "queued" else 0)


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ("?status=done", "status_invalid", "status"),
        ("?status=queued,,nope", "status_invalid", "status"),
        ("?created[gte]=yesterday", "created_invalid", "created[gte]"),
        ("?created[lt]=2026-12-01T00:00:00", "created_invalid", "created[lt]"),
        ("?limit=0", None, "limit"),
        ("?limit=101", None, "limit"),
        ("?starting_after=ch_1", None, "starting_after"),
        ("?customer=bob", None, "customer"),
        ("?created[gt]=1", "parameter_unknown", "created[gt]"),
        ("?created=1", "parameter_unknown", "created"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(
    api: httpx.AsyncClient, query: str, code: str | None, param: str
) -> None:
    response = await api.get(f"/payments{query}", headers=auth(SHOP))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    if code:
        assert error["code"] == code


async def test_the_customer_filter_alone_and_with_a_status(
    api: httpx.AsyncClient, worker: PaymentStore
) -> None:
    a = await accept(api, 3, account_id="cus_A1")
    b = await accept(api, 2, account_id="cus_B2")
    end(worker, a[1], Status.FAILED)
    end(worker, b[0], Status.FAILED)

    assert [p["id"] for p in (await listed(api, "?customer=cus_A1"))["data"]] == a[::-1]
    both = await listed(api, "?customer=cus_A1&status=failed")
    assert [p["id"] for p in both["data"]] == [a[1]]
    queued_b = await listed(api, "?customer=cus_B2&status=queued")
    assert [p["id"] for p in queued_b["data"]] == [b[1]]
    assert (await listed(api, "?customer=cus_A1", key=OTHER))["data"] == []


async def test_created_bounds_take_unix_seconds_or_rfc_3339(
    api: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    ids = await accept(api, 3)
    redis = fakeredis.FakeRedis(server=server)
    now = int(time.time())
    for pid, at in zip(ids, (now - 30, now - 20, now - 10), strict=True):
        for key in (client_listed("shop"), client_status("shop", "queued")):
            redis.zadd(key, {pid: at * 1000})

    gte = await listed(api, f"?created[gte]={now - 20}")
    lt = await listed(api, f"?created[lt]={now - 20}")
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 20))
    both = await listed(api, f"?created[gte]={iso}&created[lt]={now - 10}")

    assert [p["id"] for p in gte["data"]] == [ids[2], ids[1]]
    assert [p["id"] for p in lt["data"]] == [ids[0]]
    assert [p["id"] for p in both["data"]] == [ids[1]]


@pytest.mark.parametrize(
    ("given", "instant"), [*RFC3339_ACCEPTED, ("1798732860", "2026-12-31T16:01:00.000Z")]
)
async def test_created_bounds_take_rfc_3339_date_times_as_expires_at_does(
    api: httpx.AsyncClient, server: fakeredis.FakeServer, given: str, instant: str
) -> None:
    before, at = await accept(api, 2)
    redis = fakeredis.FakeRedis(server=server)
    ms = ms_from_iso(instant)
    for key in (client_listed("shop"), client_status("shop", "queued")):
        redis.zadd(key, {before: ms - 1, at: ms})

    gte = await api.get("/payments", params={"created[gte]": given}, headers=auth(SHOP))
    lt = await api.get("/payments", params={"created[lt]": given}, headers=auth(SHOP))

    assert [p["id"] for p in gte.json()["data"]] == [at]
    assert [p["id"] for p in lt.json()["data"]] == [before]


@pytest.mark.parametrize(
    "given",
    [*RFC3339_REFUSED, "\u0661\u0662", "\uff11\uff12", "-12", "+12", " 12", "12.5", ""],
)  # other scripts' digits, full-width digits, a sign, a space, a fraction, nothing
async def test_created_bounds_refuse_what_expires_at_refuses_and_non_ascii_digits(
    api: httpx.AsyncClient, given: str
) -> None:
    for bound in ("created[gte]", "created[lt]"):
        answer = await api.get("/payments", params={bound: given}, headers=auth(SHOP))
        assert answer.status_code == 400
        assert answer.json()["error"] == {
            "type": "invalid_request_error",
            "code": "created_invalid",
            "message": f"{bound} must be unix seconds or an RFC 3339 time such as "
            "2026-12-01T00:00:00Z",
            "param": bound,
        }


async def test_a_created_bound_past_year_9999_is_a_400_not_a_server_error(
    api: httpx.AsyncClient,
) -> None:
    for bound in ("created[gte]", "created[lt]"):
        answer = await api.get(
            f"/payments?{bound}=999999999999999999999999999999", headers=auth(SHOP)
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "created_invalid"
        assert answer.json()["error"]["param"] == bound
    last = await api.get("/payments?created[lt]=253402300799", headers=auth(SHOP))
    assert last.status_code == 200


async def test_an_expired_record_is_passed_over_and_the_page_stays_full(
    api: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    ids = await accept(api, 5)
    redis = fakeredis.FakeRedis(server=server)
    redis.delete(record_key(ids[3]), record_key(ids[2]))

    first = await listed(api, "?limit=2")
    second = await listed(api, f"?limit=2&starting_after={first['next_cursor']}")

    assert [p["id"] for p in first["data"]] == [ids[4], ids[1]]
    assert first["has_more"] is True
    assert [p["id"] for p in second["data"]] == [ids[0]]
    assert second["has_more"] is False


async def test_entries_past_the_retention_are_not_listed_and_are_trimmed(
    api: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    (old,) = await accept(api, 1)
    redis = fakeredis.FakeRedis(server=server)
    long_ago = (time.time() - settings().record_ttl_seconds - 60) * 1000
    redis.zadd(client_listed("shop"), {old: long_ago})

    assert (await listed(api))["data"] == []
    (new,) = await accept(api, 1, amount="1.00")
    assert redis.zrange(client_listed("shop"), 0, -1) == [new.encode()]
    assert 0 < redis.ttl(client_listed("shop")) <= settings().record_ttl_seconds


async def test_csv_holds_the_same_rows_as_json(
    api: httpx.AsyncClient, worker: PaymentStore
) -> None:
    ids = await accept(api, 2, description="=HYPERLINK(1)", metadata={"order": "-1", "a": "b"})
    await accept(api, 1, amount="1000.5")
    end(worker, ids[0], Status.FAILED)

    json_rows = (await listed(api, "?limit=2"))["data"]
    response = await api.get("/payments?limit=2", headers={**auth(SHOP), "Accept": "text/csv"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["id"] for r in rows] == [p["id"] for p in json_rows]
    assert [r["amount"] for r in rows] == ["1000.50", "42.99"]
    assert [r["status"] for r in rows] == [p["status"] for p in json_rows]
    assert rows[1]["description"] == "'=HYPERLINK(1)"
    assert json.loads(rows[1]["metadata"]) == {"order": "-1", "a": "b"}
    assert rows[0]["metadata"] == ""
    assert response.headers["link"] == (
        f'</payments?limit=2&starting_after={json_rows[-1]["id"]}>; rel="next"'
    )
    last = await api.get(
        f"/payments?limit=2&starting_after={json_rows[-1]['id']}",
        headers={**auth(SHOP), "Accept": "text/csv"},
    )
    assert [r["id"] for r in csv.DictReader(io.StringIO(last.text))] == [ids[0]]
    assert "link" not in last.headers


@pytest.mark.parametrize(
    ("accept_header", "kind"),
    [
        ("text/csv", "text/csv"),
        ("text/csv, application/json", "text/csv"),
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("text/csv;q=0, application/json", "application/json"),
        ("application/json, text/csv;q=0.9", "application/json"),
        ("*/*", "application/json"),
        ("application/xml", "application/json"),
        ("", "application/json"),
    ],
)
async def test_the_accept_header_s_weights_choose_csv_or_json(
    api: httpx.AsyncClient, accept_header: str, kind: str
) -> None:
    await accept(api, 1)
    response = await api.get("/payments", headers={**auth(SHOP), "Accept": accept_header})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(kind)


@pytest.mark.parametrize("query", ["?stauts=failed", "?customer=cus_A&expand[]=data", "?wait=1"])
async def test_a_parameter_the_list_does_not_take_is_refused_by_name(
    api: httpx.AsyncClient, query: str
) -> None:
    response = await api.get("/payments" + query, headers=auth(SHOP))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "parameter_unknown"
    assert error["param"] in query


async def test_a_batch_s_payments_are_listed_like_single_ones(api: httpx.AsyncClient) -> None:
    items = [{**payment(), "idempotency_key": f"b-{i}"} for i in range(3)]
    response = await api.post("/payments/batch", json={"payments": items}, headers=auth(SHOP))
    assert response.status_code == 202, response.text
    ids = {r["payment"]["id"] for r in response.json()["results"]}

    body = await listed(api, "?status=queued")

    assert {p["id"] for p in body["data"]} == ids


def forget_the_lists(redis: fakeredis.FakeRedis) -> None:
    """Redis as a version before the lists leaves it: the records, and no list sets."""
    for pattern in ("payments:client:listed:*", "payments:client:status:*",
                    "payments:client:customer:*"):  # fmt: skip
        for key in redis.scan_iter(match=pattern):
            redis.delete(key)


def backfill_all(redis: fakeredis.FakeRedis, **size: int) -> list[int | None]:
    """The maintenance rounds' ``list_backfill`` until it is done; what each round answered."""
    rounds: list[int | None] = []
    while not rounds or rounds[-1] is not None:
        rounds.append(ListBackfill(redis, **size).run())
        assert len(rounds) < 100
    return rounds


async def test_payments_made_before_the_lists_are_listed_once_the_backfill_ran(
    api: httpx.AsyncClient, worker: PaymentStore, server: fakeredis.FakeServer
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    ids = await accept(api, 5)
    other = await accept(api, 1, key=OTHER, account_id="cus_B")
    end(worker, ids[1], Status.FAILED)
    forget_the_lists(redis)
    # A payment from before records named their client: never listed, never an error.
    redis.hset(record_key("pay_" + "0" * 24), mapping={"id": "pay_" + "0" * 24, "status": "queued",
               "account_id": "cus_A", "created_at": "2026-12-01T00:00:00.000Z"})  # fmt: skip
    assert (await listed(api))["data"] == []  # what an upgrade finds

    rounds = backfill_all(redis, count=2, steps=1)
    # A moved status after the backfill moves the entry as for any payment.
    end(worker, ids[3], Status.SUCCEEDED)

    assert sum(r or 0 for r in rounds) == 6  # each of the clients' payments once
    assert len(rounds) > 2, "a round does a bounded part"
    assert [p["id"] for p in (await listed(api))["data"]] == ids[::-1]
    assert [p["id"] for p in (await listed(api, "?status=failed"))["data"]] == [ids[1]]
    assert [p["id"] for p in (await listed(api, "?status=succeeded"))["data"]] == [ids[3]]
    queued = await listed(api, "?status=queued&customer=cus_Abc123")
    assert [p["id"] for p in queued["data"]] == [ids[4], ids[2], ids[0]]
    assert [p["id"] for p in (await listed(api, key=OTHER))["data"]] == other
    record_ttl = redis.ttl(record_key(ids[0]))
    for key in redis.scan_iter(match="payments:client:*"):
        if redis.type(key) == b"zset":
            assert 0 < redis.ttl(key) <= record_ttl + 1, key


async def test_the_backfill_files_nothing_twice_and_stops_once_done(
    api: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    ids = await accept(api, 3)

    assert backfill_all(redis) == [0, None]  # already listed by their accept: nothing filed
    forget_the_lists(redis)
    assert ListBackfill(redis).run() is None  # done once: it does not look again

    assert (await listed(api))["data"] == []
    assert ids
