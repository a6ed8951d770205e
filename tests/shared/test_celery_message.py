"""The message the API's Lua script enqueues is one a Celery worker accepts as its own."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from kombu.message import Message

import worker.tasks  # noqa: F401  (registers the task, as a worker does)
from shared.celery_message import charge_message, charge_messages, task_message
from worker.celery_app import app


def test_the_message_matches_celerys_protocol_2_for_the_same_call() -> None:
    raw = json.loads(
        task_message(
            task_name="payments.charge", task_id="pay_1", args=("pay_1",), queue="payments"
        )
    )
    reference = app.amqp.as_task_v2("pay_1", "payments.charge", args=("pay_1",), kwargs={})

    assert set(reference.headers) <= set(raw["headers"])
    for name in ("lang", "task", "id", "root_id", "retries", "eta", "expires"):
        assert raw["headers"][name] == reference.headers[name], name
    args, kwargs, embed = json.loads(base64.b64decode(raw["body"]))
    ref_args, ref_kwargs, ref_embed = reference.body
    assert (args, kwargs) == (list(ref_args), ref_kwargs)
    assert set(embed) == set(ref_embed)
    assert raw["properties"]["delivery_info"]["routing_key"] == "payments"


def test_a_worker_decodes_it_into_the_task_and_its_arguments() -> None:
    raw = json.loads(
        task_message(
            task_name="payments.charge",
            task_id="pay_2",
            args=("pay_2",),
            queue="payments",
            headers={"request_id": "req-1"},
        )
    )
    message = Message(
        body=base64.b64decode(raw["body"]).decode(),
        content_type=raw["content-type"],
        content_encoding=raw["content-encoding"],
        headers=raw["headers"],
        properties=raw["properties"],
    )
    args, kwargs, _ = message.decode()
    assert message.headers["task"] in app.tasks
    assert args == ["pay_2"]
    assert kwargs == {}
    assert message.headers["request_id"] == "req-1"


@pytest.mark.parametrize(
    "headers",
    [
        {"request_id": "0f" * 16, "enqueued_at": 1_764_674_524_123},
        # The marker itself in a header value: each message made on its own, still the same.
        {"request_id": "payment-id-marker-7f3a"},
        None,
    ],
)
def test_a_batch_s_messages_are_byte_for_byte_charge_message_s(
    headers: dict[str, Any] | None,
) -> None:
    ids = [f"pay_{i:024x}" for i in range(5)]  # past the one-at-a-time threshold

    made = charge_messages(ids, queue="payments.client-a", headers=headers)

    tags = [orjson.loads(m)["properties"]["delivery_tag"] for m in made]
    assert len(set(tags)) == len(ids)  # each its own delivery tag
    for payment_id, message, tag in zip(ids, made, tags, strict=True):
        one = charge_message(payment_id, queue="payments.client-a", headers=headers)
        own_tag = orjson.loads(one)["properties"]["delivery_tag"]
        assert message == one.replace(own_tag.encode(), tag.encode())
    assert charge_messages([], queue="payments.client-a") == []
