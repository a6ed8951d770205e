"""Every Stripe call the service makes is one docs/STRIPE.md lists, with the parameters, key,
version, budget and events it says.

The gateway's methods run for real (the SDK, libcurl, aiohttp) against a recording HTTP server
on a socket standing in for Stripe; what reaches it is compared with the page's tables. Static
checks read the code for what a run cannot reach: every path written in ``shared/stripe/`` and
every caller of the gateway in ``api/`` and ``worker/`` with the budget it books.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from shared.errors import CustomerNotFound, PaymentServiceError
from shared.settings.service_settings import Settings
from shared.stripe.gateway import STRIPE_API_VERSION, StripeGateway
from shared.stripe.limits import ENDPOINTS
from shared.stripe.outcomes import HANDLED_EVENTS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "STRIPE.md"


# --- the page ----------------------------------------------------------------------------------


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table under ``## heading``."""
    lines = DOC.read_text().splitlines()
    start = lines.index(f"## {heading}")
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # past the header and its rule


@dataclass(frozen=True)
class Documented:
    endpoint: str  # "GET /v1/customers/{id}"
    gateway_method: str
    params: frozenset[str]
    idempotency_key: str | None

    @property
    def method(self) -> str:
        return self.endpoint.split(" ", 1)[0]

    def matches(self, method: str, path: str) -> bool:
        template = self.endpoint.split(" ", 1)[1]
        pattern = "/".join("[^/]+" if part == "{id}" else re.escape(part)
                           for part in template.split("/"))  # fmt: skip
        return method == self.method and re.fullmatch(pattern, path) is not None


def documented_calls() -> list[Documented]:
    calls = []
    for cells in table("The calls"):
        (endpoint,) = ticked(cells[0])
        (method,) = ticked(cells[1])
        keys = ticked(cells[3])
        calls.append(
            Documented(endpoint, method, frozenset(ticked(cells[2])), keys[0] if keys else None)
        )
    return calls


def documented(method: str, path: str) -> Documented | None:
    return next((d for d in documented_calls() if d.matches(method, path)), None)


# --- a Stripe that records ---------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]

    @property
    def param_names(self) -> set[str]:
        """Top-level names, as Stripe documents them (``created[gte]`` is ``created``)."""
        return {name.split("[", 1)[0] for name in self.params}


INTENT = {
    "object": "payment_intent",
    "status": "succeeded",
    "latest_charge": "ch_1",
    "next_action": None,
    "metadata": {"payment_id": "pay_1"},
    "created": 1_700_000_100,
}
REFUND = {"object": "refund", "status": "succeeded", "amount": 500,
          "metadata": {"refund_id": "ref_1", "payment_id": "pay_1"}}  # fmt: skip


EVENT = {"id": "evt_1", "object": "event", "type": "charge.refunded", "created": 1_700_000_200,
         "data": {"object": {"id": "ch_1", "object": "charge"}}}  # fmt: skip


def page(data: list[dict[str, Any]], *, more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": more}


def stripe_answer(request: Request) -> dict[str, Any]:
    """Stripe-shaped JSON for each documented call; lists give two pages."""
    first_page = "starting_after" not in request.params
    path = request.path
    if path.startswith("/v1/customers/"):
        return {"id": path.rsplit("/", 1)[1], "object": "customer", "default_source": None,
                "invoice_settings": {"default_payment_method": "pm_1"}}  # fmt: skip
    if path == "/v1/payment_intents" and request.method == "GET":
        if first_page:  # someone else's first, ours on the next page, awaiting 3-D Secure
            other = {**INTENT, "id": "pi_other", "metadata": {"payment_id": "pay_other"}}
            return page([other], more=True)
        ours = {
            **INTENT,
            "id": "pi_1",
            "status": "requires_action",
            "latest_charge": None,
            "next_action": {"type": "use_stripe_sdk"},
            "client_secret": "pi_1_secret_x",
        }
        return page([ours], more=False)
    if path.startswith("/v1/payment_intents"):
        return {**INTENT, "id": "pi_1"}
    if path == "/v1/charges":
        return page([], more=False)
    if path.startswith("/v1/charges/"):
        return {"id": "ch_1", "object": "charge", "amount": 1000, "amount_refunded": 0,
                "disputed": False, "payment_intent": {**INTENT, "id": "pi_1"}}  # fmt: skip
    if path == "/v1/events":
        if first_page:
            return page([EVENT], more=True)
        return page([{**EVENT, "id": "evt_2", "type": "charge.dispute.created",
                      "data": {"object": {"id": "dp_1", "object": "dispute",
                                          "charge": "ch_1"}}}], more=False)  # fmt: skip
    if path == "/v1/refunds" and request.method == "GET":
        if first_page:
            return page([{**REFUND, "id": "re_other", "metadata": {}}], more=True)
        return page([{**REFUND, "id": "re_1"}], more=False)
    if path.startswith("/v1/refunds"):
        return {**REFUND, "id": "re_1"}
    return {"error": {"type": "invalid_request_error", "message": f"Unrecognized {path}"}}


class RecordingStripe(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        params = dict(parse_qsl(url.query or body, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, url.path, params, headers)
        server = self.server
        assert isinstance(server, RecordingStripe)
        with server.lock:
            server.requests.append(request)
        answer = stripe_answer(request)
        raw = json.dumps(answer).encode()
        self.send_response(400 if "error" in answer else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Request-Id", "req_1")
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass


# --- every gateway method, run --------------------------------------------------------------

Recipe = Callable[[StripeGateway], Any]


async def _list_charges(gateway: StripeGateway) -> Any:
    try:
        return await gateway.list_charges(customer="cus_1", limit=20, starting_after="ch_0")
    finally:
        await gateway.aclose()


RECIPES: dict[str, Recipe] = {
    "default_payment_method": lambda g: g.default_payment_method(customer="cus_1"),
    "create_payment_intent": lambda g: g.create_payment_intent(
        customer="cus_1",
        amount_minor=4299,
        currency="usd",
        payment_method="pm_1",
        payment_id="pay_1",
        idempotency_key="pay_1:charge",
        description="Order 1001",
        # The service's own keys among the client's (the accept refuses them): ours still win.
        metadata={
            "order_id": "1001",
            "note": "a b&c=d",
            "payment_id": "pay_forged",
            "client": "forged",
        },
        client="shop",
        capture_method="manual",
    ),
    "capture_payment_intent": lambda g: g.capture_payment_intent(
        payment_intent_id="pi_1", amount_minor=3000, idempotency_key="pay_1:capture"
    ),
    "cancel_payment_intent": lambda g: g.cancel_payment_intent(
        payment_intent_id="pi_1", idempotency_key="pay_1:void"
    ),
    "retrieve_payment_intent": lambda g: g.retrieve_payment_intent(payment_intent_id="pi_1"),
    "find_payment_intent": lambda g: g.find_payment_intent(
        customer="cus_1", payment_id="pay_1", created_since=1_700_000_000
    ),
    "list_charges": lambda g: asyncio.run(_list_charges(g)),
    "retrieve_charge": lambda g: g.retrieve_charge(charge_id="ch_1"),
    "create_refund": lambda g: g.create_refund(
        charge_id="ch_1",
        amount_minor=500,
        refund_id="ref_1",
        payment_id="pay_1",
        idempotency_key="ref_1:refund",
    ),
    "retrieve_refund": lambda g: g.retrieve_refund(stripe_refund_id="re_1"),
    "find_refund": lambda g: g.find_refund(charge_id="ch_1", refund_id="ref_1"),
    "list_events": lambda g: [
        g.list_events(
            types=["charge.refunded", "charge.dispute.created"],
            created_gte=1_700_000_000,
            created_lte=1_700_000_300,
            starting_after=after,
        )
        for after in (None, "evt_1")
    ],
}


@dataclass
class Run:
    requests: dict[str, list[Request]]  # by gateway method
    results: dict[str, Any]

    def all(self) -> Iterator[Request]:
        for requests in self.requests.values():
            yield from requests


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    server = RecordingStripe()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        gateway = StripeGateway(Settings(environment="test", stripe_api_base=server.url))
        requests: dict[str, list[Request]] = {}
        results: dict[str, Any] = {}
        for name, recipe in RECIPES.items():
            before = len(server.requests)
            results[name] = recipe(gateway)
            requests[name] = server.requests[before:]
        yield Run(requests, results)
    finally:
        server.shutdown()
        server.server_close()


def gateway_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(StripeGateway, inspect.isfunction)
        if not name.startswith("_") and name != "aclose"
    }


def test_every_gateway_method_is_run_here() -> None:
    # A new method without a recipe would be a call this check never sees.
    assert set(RECIPES) == gateway_methods()


def test_every_request_is_a_documented_call_made_by_the_documented_method(run: Run) -> None:
    for name, requests in run.requests.items():
        assert requests, f"{name} made no request"
        for request in requests:
            call = documented(request.method, request.path)
            assert call is not None, (
                f"{name} sent {request.method} {request.path}, which docs/STRIPE.md does not list"
            )
            assert call.gateway_method == name, (
                f"docs/STRIPE.md says {call.endpoint} is made by {call.gateway_method}, not {name}"
            )


def test_each_call_sends_exactly_the_documented_parameters(run: Run) -> None:
    sent: dict[str, set[str]] = {}
    for request in run.all():
        call = documented(request.method, request.path)
        assert call is not None
        sent.setdefault(call.endpoint, set()).update(request.param_names)
    assert sent == {call.endpoint: set(call.params) for call in documented_calls()}


def test_writes_carry_an_idempotency_key_and_reads_none(run: Run) -> None:
    for request in run.all():
        call = documented(request.method, request.path)
        assert call is not None
        key = request.headers.get("idempotency-key")
        if request.method == "POST":
            assert call.idempotency_key, f"{call.endpoint}: the page names no key"
            pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^:]+", re.escape(call.idempotency_key))
            assert key is not None
            assert re.fullmatch(pattern, key), f"{call.endpoint} sent key {key!r}"
        else:
            assert key is None
            assert call.idempotency_key is None


def test_every_request_pins_the_documented_api_version(run: Run) -> None:
    assert f"Pinned: `{STRIPE_API_VERSION}`" in DOC.read_text()
    assert {r.headers.get("stripe-version") for r in run.all()} == {STRIPE_API_VERSION}


def test_the_clients_metadata_and_description_go_with_the_services_keys_which_win(
    run: Run,
) -> None:
    (create,) = run.requests["create_payment_intent"]
    metadata = {k: v for k, v in create.params.items() if k.startswith("metadata[")}
    assert metadata == {
        "metadata[order_id]": "1001",
        "metadata[note]": "a b&c=d",
        "metadata[payment_id]": "pay_1",
        "metadata[client]": "shop",
    }
    assert create.params["description"] == "Order 1001"


def test_reconciliation_finds_a_payment_intent_that_made_no_charge_past_the_first_page(
    run: Run,
) -> None:
    found = run.results["find_payment_intent"]
    assert found is not None
    assert (found.payment_intent_id, found.status, found.charge_id) == (
        "pi_1",
        "requires_action",
        None,
    )
    first, second = run.requests["find_payment_intent"]
    assert first.params["customer"] == "cus_1"
    assert first.params["created[gte]"] == "1700000000"
    assert second.params["starting_after"] == "pi_other"


def test_the_events_list_asks_for_undelivered_events_of_the_types_in_a_window(run: Run) -> None:
    first, second = run.requests["list_events"]
    assert first.params == {
        "types[0]": "charge.refunded",
        "types[1]": "charge.dispute.created",
        "created[gte]": "1700000000",
        "created[lte]": "1700000300",
        "delivery_success": "false",
        "limit": "100",
    }
    assert second.params["starting_after"] == "evt_1"
    pages = run.results["list_events"]
    assert [(p.has_more, p.last_id) for p in pages] == [(True, "evt_1"), (False, "evt_2")]
    (dispute,) = pages[1].events
    assert (dispute.type, dispute.object_id, dispute.charge_id) == (
        "charge.dispute.created", "dp_1", "ch_1")  # fmt: skip


# --- ids in paths --------------------------------------------------------------------------------

# Every gateway method that puts an id in a path: (call with that id, the documented endpoint).
ID_PATHS: dict[str, tuple[Callable[[StripeGateway, str], Any], str]] = {
    "default_payment_method": (
        lambda g, id_: g.default_payment_method(customer=id_), "GET /v1/customers/{id}"),
    "retrieve_payment_intent": (
        lambda g, id_: g.retrieve_payment_intent(payment_intent_id=id_),
        "GET /v1/payment_intents/{id}"),
    "capture_payment_intent": (
        lambda g, id_: g.capture_payment_intent(
            payment_intent_id=id_, amount_minor=None, idempotency_key="pay_1:capture"),
        "POST /v1/payment_intents/{id}/capture"),
    "cancel_payment_intent": (
        lambda g, id_: g.cancel_payment_intent(
            payment_intent_id=id_, idempotency_key="pay_1:void"),
        "POST /v1/payment_intents/{id}/cancel"),
    "retrieve_charge": (lambda g, id_: g.retrieve_charge(charge_id=id_), "GET /v1/charges/{id}"),
    "retrieve_refund": (
        lambda g, id_: g.retrieve_refund(stripe_refund_id=id_), "GET /v1/refunds/{id}"),
}  # fmt: skip


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[RecordingStripe]:
    server = RecordingStripe()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway(stripe_server: RecordingStripe) -> StripeGateway:
    stripe_server.requests.clear()
    return StripeGateway(Settings(environment="test", stripe_api_base=stripe_server.url))


@pytest.mark.parametrize("method", sorted(ID_PATHS))
@pytest.mark.parametrize(
    "object_id",
    [
        "pi_1/../../v1/customers",
        "pi_1\x00",
        "pi_1?expand[]=customer",
        "pi_1#x",
        "pi 1",
        "pi_é",
        "%2E%2E",
        "...",
    ],
)
def test_an_id_stays_one_path_segment_of_the_documented_call(
    gateway: StripeGateway, stripe_server: RecordingStripe, method: str, object_id: str
) -> None:
    call, endpoint = ID_PATHS[method]

    call(gateway, object_id)

    (request,) = stripe_server.requests
    template = endpoint.split(" ", 1)[1].split("/")
    segments = request.path.split("/")
    assert len(segments) == len(template), request.path
    (sent,) = [seg for seg, part in zip(segments, template, strict=True) if part == "{id}"]
    assert unquote(sent) == object_id
    found = documented(request.method, request.path)
    assert found is not None
    assert found.endpoint == endpoint


@pytest.mark.parametrize("method", sorted(ID_PATHS))
@pytest.mark.parametrize("object_id", ["", ".", "..", "pi_\ud800"])
def test_an_id_no_path_segment_can_hold_is_an_object_stripe_does_not_have_and_nothing_is_sent(
    gateway: StripeGateway, stripe_server: RecordingStripe, method: str, object_id: str
) -> None:
    # "" would name the list, "." and ".." (escaped or not) the path above; a lone surrogate
    # has no UTF-8. The answer is Stripe's to an id it does not know.
    call, _ = ID_PATHS[method]

    with pytest.raises(PaymentServiceError) as refused:
        call(gateway, object_id)

    if method == "default_payment_method":
        assert isinstance(refused.value, CustomerNotFound)
    else:
        assert refused.value.code == "resource_missing"
    assert stripe_server.requests == []


# --- what the code says, read without running it -----------------------------------------------

HELPERS = {"_get": "GET", "_post": "POST"}


def template_of(node: ast.expr) -> str | None:
    """A path written as a literal or an f-string, with every placeholder as ``{id}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            str(part.value) if isinstance(part, ast.Constant) else "{id}" for part in node.values
        )
    return None


def written_paths() -> Iterator[tuple[str, ast.expr, Path]]:
    """(method, path expression, file) of every request written in ``shared/stripe/``."""
    for file in sorted((ROOT / "shared" / "stripe").glob("*.py")):
        tree = ast.parse(file.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if func.name in HELPERS:
                continue  # the helper passes on its caller's path
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                attr, args = node.func.attr, node.args
                if attr in HELPERS and args:
                    yield HELPERS[attr], args[0], file
                elif attr in ("raw_request", "raw_request_async") and len(args) >= 2:
                    verb = args[0]
                    method = str(verb.value).upper() if isinstance(verb, ast.Constant) else "?"
                    yield method, args[1], file


def written_calls() -> set[tuple[str, str | None, Path]]:
    """(method, path template, file) of every request written in ``shared/stripe/``."""
    return {(method, template_of(path), file) for method, path, file in written_paths()}


def test_every_path_written_in_shared_stripe_is_a_documented_call() -> None:
    written = written_calls()
    unreadable = [str(file) for _, path, file in written if path is None]
    assert not unreadable, f"a Stripe path that is not a literal: {unreadable}"
    endpoints = {f"{method} {path}" for method, path, _ in written}
    assert endpoints == {call.endpoint for call in documented_calls()}


def test_every_id_in_a_written_path_is_escaped_as_one_segment() -> None:
    # An id from an event, a record or a client goes through the gateway's _segment, which
    # percent-escapes it: no value can make the request name another path.
    unescaped = [
        f"{file.name}: {ast.unparse(path)}"
        for _, path, file in written_paths()
        if isinstance(path, ast.JoinedStr)
        for part in path.values
        if isinstance(part, ast.FormattedValue)
        and not (
            isinstance(part.value, ast.Call)
            and isinstance(part.value.func, ast.Name)
            and part.value.func.id == "_segment"
        )
    ]
    assert not unescaped


def callers() -> set[tuple[str, str, str | None, str]]:
    """(file, gateway method, call label, budget) of every use of the gateway in the service."""
    methods = gateway_methods()
    found: set[tuple[str, str, str | None, str]] = set()
    for package in ("api", "worker"):
        for file in sorted((ROOT / package).rglob("*.py")):
            name = str(file.relative_to(ROOT))
            for node in ast.walk(ast.parse(file.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                args = node.args
                if (
                    node.func.attr == "call"
                    and len(args) >= 2
                    and isinstance(args[0], ast.Constant)
                    and isinstance(args[1], ast.Attribute)
                    and args[1].attr in methods
                ):  # MeteredStripe.call, BudgetedCharges.call: its endpoint's slot
                    label = str(args[0].value)
                    found.add((name, args[1].attr, label, ENDPOINTS.get(label, "?")))
                elif node.func.attr in methods:
                    found.add((name, node.func.attr, None, "none"))
    return found


def test_every_caller_of_the_gateway_is_listed_with_the_budget_it_books() -> None:
    listed = set()
    for cells in table("Who makes them, and which budget they book"):
        (file,) = ticked(cells[0])
        (method,) = ticked(cells[1])
        label = ticked(cells[2])
        budget = ticked(cells[3])[0] if label else "none"
        listed.add((file, method, label[0] if label else None, budget))
    assert callers() == listed


def test_each_call_label_books_the_endpoint_its_gateway_method_calls() -> None:
    # The budget's table (shared.stripe.limits.ENDPOINTS) names the endpoint the page names
    # for the call's gateway method: Stripe meters each call where the budget books it.
    endpoints_of = {call.gateway_method: call.endpoint for call in documented_calls()}
    for cells in table("Who makes them, and which budget they book"):
        (method,) = ticked(cells[1])
        label = ticked(cells[2])
        if label:
            assert ENDPOINTS[label[0]] == endpoints_of[method], label[0]
    assert set(ENDPOINTS.values()) == set(endpoints_of.values())


def test_the_events_consumed_are_the_documented_ones_and_fetch_documented_calls() -> None:
    rows = table("Events it consumes")
    assert {ticked(cells[0])[0] for cells in rows} == set(HANDLED_EVENTS)
    endpoints = {call.endpoint for call in documented_calls()}
    for cells in rows:
        assert ticked(cells[1])[0] in endpoints


def test_the_page_is_in_the_readmes_map() -> None:
    assert "(docs/STRIPE.md)" in (ROOT / "README.md").read_text()
