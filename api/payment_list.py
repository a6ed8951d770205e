"""``GET /payments``: a client's own payments from the service's records, newest first.

How a client reconciles a bulk run ("which of mine are still queued, unknown, failed?"). The
records come from the indexes the Lua scripts keep (shared.store.list_store): one script a
page. ``Accept: text/csv`` answers the same rows as CSV (``CSV_COLUMNS``), the next page in a
``Link`` header. Filters, as Stripe's lists take them where it has them:

- ``status``: one or several (repeated, or comma-separated): any of them. Every status of
  ``shared.payments.states.Status`` is accepted.
- ``customer``: the payment's ``account_id``.
- ``created[gte]`` / ``created[lt]``: unix seconds as Stripe takes them (ASCII digits), or an
  RFC 3339 date-time as ``expires_at`` takes it (``shared.payments.rfc3339``).
- ``limit`` (1-100, 20), ``starting_after`` (a payment id of the caller's list: another's, or
  one past the retention, is 400 ``resource_missing``), ``has_more`` and ``next_cursor``.

Every client, an admin too, lists its own payments only.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated
from urllib.parse import urlencode

import orjson
from fastapi import Depends, Query, Request
from starlette.responses import Response

from api import scopes
from api.error_responses import JSON
from api.operation_docs import RATE_LIMIT, error_responses, read_by_hand
from api.request_helpers import refuse_unknown_parameters, viewer_of
from api.schemas import CUSTOMER_ID_PATTERN, PAYMENT_ID_PATTERN, PaymentList, payment_json
from shared.errors import InvalidRequest, StoreUnavailable
from shared.payments.money import format_minor
from shared.payments.payment_records import PaymentRecord
from shared.payments.rfc3339 import ms_from_rfc3339
from shared.payments.states import Status
from shared.store.list_store import AsyncListStore, CursorMissing

PATH = "/payments"
CSV = "text/csv"
# The export's columns, in this order: a client's spreadsheet or script may rely on them.
CSV_COLUMNS = ("id", "status", "account_id", "amount", "currency", "amount_refunded",
               "created_at", "updated_at", "payment_intent", "charge", "error_code",
               "description", "metadata")  # fmt: skip
# OWASP's CSV injection guard: a cell a spreadsheet would read as a formula is made text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

router = scopes.guarded_router("payments")

_CREATED_BOUNDS = ("created[gte]", "created[lt]")
_LIST_PARAMETERS = frozenset({"status", "customer", *_CREATED_BOUNDS, "limit", "starting_after"})
_STATUS_HINT = "status must be one or more of: " + ", ".join(s.value for s in Status)
_CREATED_HINT = "{} must be unix seconds or an RFC 3339 time such as 2026-12-01T00:00:00Z"
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z


async def _list_store(request: Request) -> AsyncListStore:
    store: AsyncListStore = request.app.state.list_store
    return store


ListStoreDep = Annotated[AsyncListStore, Depends(_list_store)]

# The next page's URL while has_more, for a CSV export to follow (RFC 8288's Link).
NEXT_PAGE = {
    "description": "With `Accept: text/csv` (JSON has `next_cursor`), the next page while there "
    'is one: `</payments?...&starting_after=pay_...>; rel="next"` (the same filters, the '
    "cursor of this page's last item).",
    "schema": {"type": "string"},
}


@router.get(
    PATH,
    operation_id="list_payments",
    response_model=PaymentList,
    responses={
        200: {
            "description": (
                "The caller's payments, newest first; with `Accept: text/csv`, the same rows "
                "as CSV (columns: " + ", ".join(CSV_COLUMNS) + "), the next page in `Link`."
            ),
            "headers": {**RATE_LIMIT, "Link": NEXT_PAGE},
            "content": {CSV: {"schema": {"type": "string"}}},
        },
        **error_responses(
            InvalidRequest(_STATUS_HINT, code="status_invalid", param="status"),
            InvalidRequest(
                _CREATED_HINT.format("created[gte]"), code="created_invalid", param="created[gte]"
            ),
            InvalidRequest(
                "No such payment: pay_3f9c2a7be1d04c55a9e1f0d2",
                code="resource_missing",
                param="starting_after",
            ),
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(),
)
async def list_payments(
    request: Request,
    store: ListStoreDep,
    status: Annotated[
        list[str] | None,
        Query(description="One or more statuses (repeat the parameter, or separate by commas)."),
    ] = None,
    customer: Annotated[
        str | None, Query(pattern=CUSTOMER_ID_PATTERN, description="The payment's account_id.")
    ] = None,
    created_gte: Annotated[
        str | None,
        Query(alias="created[gte]", description="Created at or after: unix seconds or RFC 3339."),
    ] = None,
    created_lt: Annotated[
        str | None,
        Query(alias="created[lt]", description="Created before: unix seconds or RFC 3339."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        str | None,
        Query(pattern=PAYMENT_ID_PATTERN, description="The last payment id of the page before."),
    ] = None,
) -> Response:
    """The caller's own payments from the service's records (not Stripe's), newest first:
    every status, filtered by `status` (one or several), `customer`, `created[gte]` and
    `created[lt]`, a page at a time (`limit`, `starting_after`: pass `next_cursor`).
    `Accept: text/csv` exports the same rows. Payments are listed while their records are
    kept (RECORD_TTL_SECONDS)."""
    for name in request.query_params:
        if name.startswith("created") and name not in _CREATED_BOUNDS:
            # Stripe's other bounds (created[gt], created[lte], created=) are not taken: a
            # filter silently left out would list more than the client asked for.
            raise InvalidRequest(
                f"Received unknown parameter: {name} (created[gte] and created[lt] are taken)",
                code="parameter_unknown",
                param=name,
            )
    refuse_unknown_parameters(request, _LIST_PARAMETERS)
    statuses = _statuses(status or [])
    try:
        page = await store.page(
            request.state.client,
            limit=limit,
            statuses=statuses,
            customer=customer,
            created_gte_ms=_created_ms(created_gte, "created[gte]"),
            created_lt_ms=_created_ms(created_lt, "created[lt]"),
            starting_after=starting_after,
        )
    except CursorMissing:
        raise InvalidRequest(
            f"No such payment: {starting_after}", code="resource_missing", param="starting_after"
        ) from None
    if wants_csv(request.headers.get("accept", "")):
        headers = {}
        if page.has_more and page.next_cursor:
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "starting_after"]
            query.append(("starting_after", page.next_cursor))
            headers["Link"] = f'<{PATH}?{urlencode(query)}>; rel="next"'
        return Response(csv_rows(page.records), media_type=CSV, headers=headers)
    viewer = viewer_of(request)
    body = b'{"object":"list","data":[%s],"has_more":%s,"next_cursor":%s,"url":"%s"}' % (
        b",".join(payment_json(record, viewer=viewer) for record in page.records),
        b"true" if page.has_more else b"false",
        orjson.dumps(page.next_cursor),
        PATH.encode(),
    )
    return Response(body, media_type=JSON)


def _statuses(given: list[str]) -> list[str]:
    known = {s.value for s in Status}
    wanted = [part.strip() for value in given for part in value.split(",") if part.strip()]
    if any(value not in known for value in wanted):
        raise InvalidRequest(_STATUS_HINT, code="status_invalid", param="status")
    return sorted(set(wanted))


def _created_ms(value: str | None, param: str) -> int | None:
    if value is None:
        return None
    try:
        # ASCII digits only: str.isdigit alone takes other scripts' digits too.
        if value.isascii() and value.isdigit():
            seconds = int(value)
            # Past 9999-12-31 (RFC 3339's last year) no payment exists, and Redis's scores
            # must stay exact integers.
            if seconds > _LAST_SECOND:
                raise ValueError(value)
            return seconds * 1000
        return ms_from_rfc3339(value)
    except ValueError:
        raise InvalidRequest(
            _CREATED_HINT.format(param), code="created_invalid", param=param
        ) from None


def wants_csv(accept: str) -> bool:
    """Whether the Accept header prefers CSV to JSON, by its q-values (RFC 9110 12.5.1): CSV when
    its weight is above JSON's, or equal and CSV is named (not only a wildcard). No header, or
    one that takes neither, gets JSON, as the header may be disregarded."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        media = media.lower()
        weights[media] = max(q, weights.get(media, 0.0))

    def weight(media: str) -> float:
        kind = media.split("/")[0] + "/*"
        for name in (media, kind, "*/*"):
            if name in weights:
                return weights[name]
        return 0.0

    csv_q, json_q = weight(CSV), weight(JSON)
    return csv_q > json_q or (csv_q == json_q > 0 and CSV in weights)


def csv_rows(records: list[PaymentRecord]) -> str:
    """The records as CSV, ``CSV_COLUMNS`` with a header row: amounts as decimal strings in
    major units, metadata as a JSON object, a cell a spreadsheet would take for a formula
    prefixed with ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        row = (r.id, r.status.value, r.account_id, format_minor(r.amount_minor, r.currency),
               r.currency, format_minor(r.amount_refunded_minor, r.currency), r.created_at,
               r.updated_at, r.payment_intent or "", r.charge or "",
               (r.error or {}).get("code") or "", r.description or "",
               orjson.dumps(r.metadata).decode() if r.metadata else "")  # fmt: skip
        writer.writerow([_cell(value) for value in row])
    return out.getvalue()


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value
