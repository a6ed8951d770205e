"""A Celery task message (protocol 2) as kombu's Redis transport stores it in a queue list.

The API enqueues inside the same Lua script that claims the idempotency key and writes the
payment record, so that the three happen atomically in one round trip: no payment is lost if the
API dies between them, and the accept path never runs Celery's synchronous ``apply_async``
(a sizeable cost per request). This is the one place that knows the wire format; a unit test checks
it against Celery's own ``as_task_v2`` and the integration tests have real workers consume it.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Sequence
from typing import Any

import orjson

from shared.payments.payment_records import CHARGE_TASK

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def charge_message(payment_id: str, *, queue: str, headers: dict[str, Any] | None = None) -> bytes:
    """The ``payments.charge`` task for one payment; the payment id is also the task id."""
    return task_message(
        task_name=CHARGE_TASK,
        task_id=payment_id,
        args=(payment_id,),
        queue=queue,
        headers=headers,
    )


def charge_messages(
    payment_ids: Sequence[str], *, queue: str, headers: dict[str, Any] | None = None
) -> list[bytes]:
    """:func:`charge_message` for each of ``payment_ids`` (a batch's, sharing queue and
    headers): the message is made once with a marker in place of the payment id and filled in
    for each payment, with its own body and delivery tag. The same bytes as charge_message
    would make for each (a test compares them)."""
    if len(payment_ids) < _TEMPLATE_FROM:
        return [charge_message(p, queue=queue, headers=headers) for p in payment_ids]
    marker_body = _charge_body(_MARKER)
    template = charge_message(_MARKER, queue=queue, headers=headers)
    data = orjson.loads(template)
    tag = data["properties"]["delivery_tag"].encode()
    template = template.replace(base64.b64encode(marker_body), b"\x01").replace(tag, b"\x02")
    marker = _MARKER.encode()
    if (
        template.count(b"\x01") != 1
        or template.count(b"\x02") != 1
        or (template.count(marker) != _MARKER_PLACES)
    ):
        # The marker or the tag shows elsewhere too (in a header value): one at a time.
        return [charge_message(p, queue=queue, headers=headers) for p in payment_ids]
    before_body, rest = template.split(b"\x01")
    between, after_tag = rest.split(b"\x02")
    pieces = [before_body, *between.split(marker)]
    tags = os.urandom(16 * len(payment_ids)).hex().encode()
    out = []
    for i, payment_id in enumerate(payment_ids):
        pid = payment_id.encode()
        body = base64.b64encode(_charge_body(payment_id))
        out.append(pieces[0] + body + pid.join(pieces[1:]) + tags[32 * i : 32 * i + 32] + after_tag)
    return out


# Fewer messages than this are made one at a time: the template costs about two messages.
_TEMPLATE_FROM = 3
# Stands for the payment id in the template: printable, so JSON and repr() leave it as it is.
_MARKER = "payment-id-marker-7f3a"
_MARKER_PLACES = 4  # headers id, root_id and argsrepr; properties correlation_id


def _charge_body(payment_id: str) -> bytes:
    return orjson.dumps(
        [[payment_id], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )


def task_message(
    *,
    task_name: str,
    task_id: str,
    args: tuple[Any, ...],
    queue: str,
    headers: dict[str, Any] | None = None,
) -> bytes:
    """Serialize a protocol-2 message for ``task_name(*args)`` routed to ``queue``."""
    body = orjson.dumps(
        [list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    message_headers: dict[str, Any] = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
        "stamped_headers": None,
        "stamps": {},
        "replaced_task_nesting": 0,
    }
    if headers:
        message_headers.update(headers)
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": message_headers,
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": os.urandom(16).hex(),
            },
        }
    )


def restamped(message: bytes, **headers: Any) -> bytes:
    """The same task as a new message (a recovery sweep's push): a fresh delivery tag, and
    ``headers`` set (``enqueued_at``, ``recovered``)."""
    data = orjson.loads(message)
    data["headers"].update(headers)
    data["properties"]["delivery_tag"] = os.urandom(16).hex()
    return orjson.dumps(data)
