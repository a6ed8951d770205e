"""Run the localstripe emulator in-process, bound to one address, with its disk persistence off.

localstripe's own launcher binds every interface and pickles its whole store to the hard-coded
``/tmp/localstripe.pickle`` after every write (shared by every instance on the host, slower as the
store grows, and crashing on restart past ~64 KB). Here the store lives in memory only.

Two gaps are filled so that it answers like Stripe does for what this service uses:
- lists come back newest first (localstripe returns insertion order, oldest first);
- ``GET /v1/payment_intents`` lists PaymentIntents as Stripe does (localstripe refuses every
  filter): by ``customer``, ``created`` (a timestamp, or ``gt``/``gte``/``lt``/``lte``),
  ``limit`` (1 to 100, 10 by default) and ``starting_after``, newest first, with ``has_more``;
- ``GET /v1/charges?customer=`` keeps its 404 for an unknown customer (already the case);
- a PaymentIntent's metadata is copied to the charge it makes, once, when it makes it (Stripe
  does so on confirmation; localstripe leaves the charge's metadata empty);
- a PaymentIntent takes a ``description`` (localstripe refuses it) and its charge starts with a
  copy of it, as at Stripe;
- a PaymentIntent naming a customer or a payment method that does not exist is a 404
  ``resource_missing`` naming that parameter (``param``), as Stripe answers (localstripe's
  404 names nothing, which reads as an unknown customer);
- 3-D Secure: ``pm_card_threeDSecure2Required`` (a card whose charges need authentication,
  completed with ``POST /v1/payment_intents/{id}/_authenticate``), and the
  ``payment_intent.payment_failed`` event when authentication fails;
- events: each webhook delivery's outcome is kept on its event, and ``GET /v1/events`` filters
  as Stripe does (``type`` with ``*``, or ``types``; ``created``; ``delivery_success``: false
  lists the events still pending or whose delivery to an endpoint failed; ``limit``,
  ``starting_after``, ``has_more``, newest first); a refund sends ``charge.refunded``;
- authorizations (``capture_method=manual``): a PaymentIntent shows ``amount_capturable``,
  ``amount_received``, ``cancellation_reason`` and ``canceled_at``, its charge
  ``amount_captured``; ``/capture`` of one that is not ``requires_capture`` is Stripe's 400
  ``payment_intent_unexpected_state`` and an ``amount_to_capture`` above what is capturable a
  400 naming it (localstripe answered a bare 400, or a 500 when there was no charge);
  ``/cancel`` takes a ``cancellation_reason`` and sends ``payment_intent.canceled`` (localstripe
  sent nothing); ``POST /v1/payment_intents/{id}/_expire_authorization`` (a test helper) does
  what Stripe does to an authorization 7 days on: canceled, ``cancellation_reason``
  ``automatic``, ``payment_intent.canceled`` sent;
- disputes: ``POST /v1/charges/{id}/_dispute`` (a test helper, as ``_authenticate`` is: Stripe
  opens disputes in test mode through special cards instead) makes a ``dp_…`` dispute on the
  charge (``GET /v1/disputes/{id}``), marks the charge ``disputed`` and sends the signed
  ``charge.dispute.created`` event, as the customer's bank opening one would.

Signed webhooks: ``POST /_config/webhooks/{id}`` with ``url``, ``secret`` and ``events``
(``make run`` registers the API's ``/webhooks/stripe``).

Usage: ``python -m devtools.stripe_emulator [--host 127.0.0.1] [--port 8420]``.
Flush between tests with ``DELETE /_config/data``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any


def build_app() -> Any:
    from localstripe import resources

    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None

    original_list_all = resources.StripeObject.__dict__["_api_list_all"].__func__

    def newest_first(
        cls: Any, /, url: Any, limit: Any = None, starting_after: Any = None, **kwargs: Any
    ) -> Any:
        li = original_list_all(cls, url, limit=limit, starting_after=starting_after, **kwargs)
        li._list = list(reversed(li._list))
        return li

    resources.StripeObject._api_list_all = classmethod(newest_first)
    _events(resources)
    _payment_intent_list(resources)
    _intent_metadata_on_charges(resources)
    _missing_objects_named(resources)
    _payment_intent_description(resources)
    _three_d_secure(resources)
    _authorizations(resources)
    _disputes(resources)
    from localstripe import server  # after the patches: it routes resources.extra_apis

    return server.app


def _events(resources: Any) -> None:
    """Events as Stripe keeps them: each webhook delivery's outcome is recorded on its event
    (localstripe sends once and forgets), ``GET /v1/events`` filters as Stripe does, and a
    refund sends ``charge.refunded``."""
    import asyncio
    import fnmatch
    import hashlib
    import hmac
    import json

    import aiohttp
    from localstripe import webhooks
    from localstripe.errors import UserError

    log = logging.getLogger("aiohttp.access")
    sending: set[asyncio.Future[None]] = set()  # a task nobody holds may be collected

    def schedule(event: Any) -> None:
        hooks = [hook for hook in webhooks._webhooks.values()
                 if hook.events is None or event.type in hook.events]  # fmt: skip
        # None: pending. With no endpoint for its type, nothing is pending or failed.
        event._delivery_success = None if hooks else True
        task = asyncio.ensure_future(deliver(event, hooks))
        sending.add(task)
        task.add_done_callback(sending.discard)

    async def deliver(event: Any, hooks: list[Any]) -> None:
        """localstripe's own send (signed as Stripe signs, a second later), outcome kept."""
        payload = json.dumps(event._export(), indent=2, sort_keys=True).encode()
        signed = b"%d.%s" % (event.created, payload)
        await asyncio.sleep(1)
        delivered = []
        for hook in hooks:
            signature = hmac.new(hook.secret.encode(), signed, hashlib.sha256).hexdigest()
            headers = {"Content-Type": "application/json; charset=utf-8",
                       "Stripe-Signature": f"t={event.created},v1={signature}"}  # fmt: skip
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(hook.url, data=payload, headers=headers) as answer,
                ):
                    delivered.append(200 <= answer.status < 300)
                    log.info("webhook %r answered %d", event.type, answer.status)
            except aiohttp.ClientError as exc:
                delivered.append(False)
                log.info("webhook %r failed: %s", event.type, exc)
        if hooks:
            event._delivery_success = all(delivered)

    resources.schedule_webhook = schedule  # what localstripe's resources call
    webhooks.schedule_webhook = schedule

    list_all = resources.StripeObject.__dict__["_api_list_all"].__func__  # newest first

    def list_events(
        cls: Any,
        /,
        url: Any,
        type: Any = None,
        types: Any = None,
        created: Any = None,
        delivery_success: Any = None,
        limit: Any = None,
        starting_after: Any = None,
        **kwargs: Any,
    ) -> Any:
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs))
        if type is not None and types is not None:
            raise UserError(400, "You may pass either type or types, but not both.")
        if types is not None and (
            not isinstance(types, list) or not 1 <= len(types) <= 20
            or not all(isinstance(t, str) for t in types)
        ):  # fmt: skip
            raise UserError(400, "types must be an array of up to 20 event types")
        if delivery_success not in (None, "true", "false"):
            raise UserError(400, f"Invalid delivery_success: {delivery_success!r}")
        li = list_all(cls, url, limit=page_limit(resources, limit), starting_after=starting_after)
        if type is not None:
            li._list = [e for e in li._list if fnmatch.fnmatchcase(e.type, type)]
        if types is not None:
            li._list = [e for e in li._list if e.type in types]
        if created is not None:
            li._list = list(filter(created_filter(resources, created), li._list))
        if delivery_success is not None:
            want = delivery_success == "true"
            li._list = [e for e in li._list
                        if (getattr(e, "_delivery_success", None) is True) == want]  # fmt: skip
        return li

    resources.Event._api_list_all = classmethod(list_events)

    refund = resources.Refund
    create_refund = refund._api_create

    def refund_and_report(cls: Any, /, **data: Any) -> Any:
        obj = create_refund(**data)
        charge = resources.Charge._api_retrieve(obj.charge)
        resources.schedule_webhook(resources.Event("charge.refunded", charge))
        return obj

    refund._api_create = classmethod(refund_and_report)


CREATED_RANGE = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}


def created_filter(resources: Any, created: Any) -> Any:
    """Stripe's ``created``: a timestamp is an exact match; a dict, bounds that must all hold."""
    from localstripe.errors import UserError

    bounds = created.items() if isinstance(created, dict) else [("", created)]
    tests = []
    for op, raw in bounds:
        value = resources.try_convert_to_int(raw)
        test = CREATED_RANGE.get(op) if op else int.__eq__
        if test is None or type(value) is not int:
            name = f"created[{op}]" if op else "created"
            raise UserError(400, f"Invalid {name}: {raw!r}")
        tests.append((test, value))
    return lambda obj: all(test(obj.created, value) for test, value in tests)


def page_limit(resources: Any, limit: Any) -> int:
    """Stripe's ``limit``: 1 to 100, 10 by default."""
    from localstripe.errors import UserError

    value = resources.try_convert_to_int(10 if limit is None else limit)
    if type(value) is not int or not 1 <= value <= 100:
        raise UserError(400, "limit must be an integer between 1 and 100")
    return value


def _payment_intent_list(resources: Any) -> None:
    """``GET /v1/payment_intents`` with Stripe's filters: the service reconciles through it."""
    from localstripe.errors import UserError

    intent = resources.PaymentIntent
    list_all = resources.StripeObject.__dict__["_api_list_all"].__func__  # newest first

    def list_intents(
        cls: Any,
        /,
        url: Any,
        customer: Any = None,
        created: Any = None,
        limit: Any = None,
        starting_after: Any = None,
        **kwargs: Any,
    ) -> Any:
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs))
        limit = page_limit(resources, limit)
        if customer is not None:
            resources.Customer._api_retrieve(customer)  # 404 for an unknown customer
        li = list_all(cls, url, limit=limit, starting_after=starting_after)
        if customer is not None:
            li._list = [pi for pi in li._list if pi.customer == customer]
        if created is not None:
            li._list = list(filter(created_filter(resources, created), li._list))
        return li

    intent._api_list_all = classmethod(list_intents)


def _intent_metadata_on_charges(resources: Any) -> None:
    """A charge made by a PaymentIntent starts with a copy of the PaymentIntent's metadata (a
    later update of either does not reach the other), as at Stripe."""
    charge = resources.Charge
    initialize = charge.__dict__["_initialize_charge"]

    def with_intent_metadata(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.payment_intent and not self.metadata:
            intent = resources.PaymentIntent._api_retrieve(self.payment_intent)
            self.metadata = dict(intent.metadata or {})
        return initialize(self, *args, **kwargs)

    charge._initialize_charge = with_intent_metadata


def _missing_objects_named(resources: Any) -> None:
    """``POST /v1/payment_intents`` with a ``customer`` or ``payment_method`` that does not
    exist: Stripe's 404, ``code: resource_missing`` and the ``param`` at fault."""
    from localstripe.errors import UserError

    intent = resources.PaymentIntent
    init = intent.__init__
    named = (("customer", resources.Customer, "customer"),
             ("payment_method", resources.PaymentMethod, "PaymentMethod"))  # fmt: skip

    def with_missing_named(self: Any, *args: Any, **kwargs: Any) -> None:
        for param, kind, label in named:
            value = kwargs.get(param)
            if not isinstance(value, str) or not value:
                continue
            try:
                kind._api_retrieve(value)
            except UserError as exc:
                if exc.code != 404:
                    raise
                body = {"code": "resource_missing", "param": param}
                raise UserError(404, f"No such {label}: '{value}'", body) from None
        init(self, *args, **kwargs)

    intent.__init__ = with_missing_named


def _payment_intent_description(resources: Any) -> None:
    """``description`` on a PaymentIntent: kept, shown, and copied to the charge it makes."""
    from localstripe.errors import UserError

    intent = resources.PaymentIntent
    init = intent.__init__
    create_charge = intent._create_charge

    def with_description(self: Any, *args: Any, description: Any = None, **kwargs: Any) -> None:
        if description is not None and (type(description) is not str or len(description) > 1000):
            raise UserError(400, "Bad request")
        init(self, *args, **kwargs)
        self.description = description or None

    def charge_with_description(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = create_charge(self, *args, **kwargs)
        if self.latest_charge is not None and not self.latest_charge.description:
            self.latest_charge.description = getattr(self, "description", None)
        return result

    intent.__init__ = with_description
    intent._create_charge = charge_with_description


# Stripe's test payment method whose every charge needs 3-D Secure (card 4000 0027 6000 3184).
THREE_D_SECURE_CARD = "pm_card_threeDSecure2Required"


def _three_d_secure(resources: Any) -> None:
    """3-D Secure as Stripe does it: ``pm_card_threeDSecure2Required`` exists (localstripe
    knows the card number, not the id), and a failed ``_authenticate`` sends
    ``payment_intent.payment_failed`` (localstripe sends nothing then)."""
    pm = resources.PaymentMethod
    canonical = pm.__dict__["_try_get_canonical_test_article"].__func__

    def with_3ds(cls: Any, /, id: Any) -> Any:
        if id == THREE_D_SECURE_CARD:
            card = {"number": "4000002760003184", "exp_month": "12", "exp_year": "2030",
                    "cvc": "123"}  # fmt: skip
            return cls(type="card", card=card)
        return canonical(cls, id)

    pm._try_get_canonical_test_article = classmethod(with_3ds)

    intent = resources.PaymentIntent
    authenticate = intent.__dict__["_api_authenticate"].__func__

    def authenticate_and_report(cls: Any, /, id: Any, **kwargs: Any) -> Any:
        obj = authenticate(cls, id, **kwargs)
        if obj.status == "requires_payment_method":
            resources.schedule_webhook(resources.Event("payment_intent.payment_failed", obj))
        return obj

    intent._api_authenticate = classmethod(authenticate_and_report)
    resources.extra_apis[:] = [
        (method, url, intent._api_authenticate if url.endswith("/_authenticate") else func)
        for method, url, func in resources.extra_apis
    ]


def _authorizations(resources: Any) -> None:
    """Authorize now, capture later, as Stripe answers it (see the module's docstring)."""
    import time

    from localstripe.errors import UserError

    intent, charge = resources.PaymentIntent, resources.Charge
    init = intent.__init__

    def with_cancellation(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.cancellation_reason = None
        self.canceled_at = None

    def amount_capturable(self: Any) -> int:
        return int(self.amount) if self.status == "requires_capture" else 0

    def amount_received(self: Any) -> int:
        if self.status != "succeeded" or self.latest_charge is None:
            return 0
        return int(self.latest_charge.amount_captured)

    def amount_captured(self: Any) -> int:
        if not self.captured or self.status != "succeeded":
            return 0
        return int(getattr(self, "_amount_captured", None) or self.amount)

    intent.__init__ = with_cancellation
    intent.amount_capturable = property(amount_capturable)
    intent.amount_received = property(amount_received)
    charge.amount_captured = property(amount_captured)

    capture_charge = charge._capture

    def capture_recording_amount(self: Any, amount: Any, on_success: Any = None) -> Any:
        self._amount_captured = resources.try_convert_to_int(amount) if amount else self.amount
        return capture_charge(self, amount, on_success=on_success)

    charge._capture = capture_recording_amount

    def unexpected_state(obj: Any, action: str) -> UserError:
        return UserError(
            400,
            f"This PaymentIntent could not be {action} because it has a status of "
            f"{obj.status}. Only a PaymentIntent with one of the following statuses may be "
            f"{action}: requires_capture.",
            {"code": "payment_intent_unexpected_state"},
        )

    capture = intent.__dict__["_api_capture"].__func__

    def checked_capture(cls: Any, /, id: Any, amount_to_capture: Any = None, **kwargs: Any) -> Any:
        obj = cls._api_retrieve(id)
        if obj.status != "requires_capture":
            raise unexpected_state(obj, "captured")
        if amount_to_capture is not None:
            amount = resources.try_convert_to_int(amount_to_capture)
            if type(amount) is not int or not 0 < amount <= obj.amount:
                raise UserError(
                    400,
                    "The amount to capture must be positive and at most the amount capturable "
                    f"({obj.amount}).",
                    {"code": "amount_too_large", "param": "amount_to_capture"},
                )
        return capture(cls, id, amount_to_capture=amount_to_capture, **kwargs)

    cancel = intent.__dict__["_api_cancel"].__func__
    reasons = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")

    def cancel_and_report(
        cls: Any, /, id: Any, cancellation_reason: Any = None, **kwargs: Any
    ) -> Any:
        if cancellation_reason is not None and cancellation_reason not in reasons:
            raise UserError(400, f"Invalid cancellation_reason: {cancellation_reason!r}")
        before = cls._api_retrieve(id)
        if before.status in ("succeeded", "canceled", "processing"):
            raise unexpected_state(before, "canceled")
        obj = cancel(cls, id, **kwargs)
        obj.cancellation_reason = cancellation_reason
        obj.canceled_at = int(time.time())
        resources.schedule_webhook(resources.Event("payment_intent.canceled", obj))
        return obj

    def expire_authorization(id: str, **_: Any) -> Any:
        obj = intent._api_retrieve(id)
        if obj.status != "requires_capture":
            raise unexpected_state(obj, "expired")
        obj._canceled = True
        obj.cancellation_reason = "automatic"
        obj.canceled_at = int(time.time())
        resources.schedule_webhook(resources.Event("payment_intent.canceled", obj))
        return obj

    intent._api_capture = classmethod(checked_capture)
    intent._api_cancel = classmethod(cancel_and_report)
    replaced = {"/capture": intent._api_capture, "/cancel": intent._api_cancel}
    resources.extra_apis[:] = [
        (method, url, next((f for end, f in replaced.items()
                            if url.startswith("/v1/payment_intents/") and url.endswith(end)),
                           func))
        for method, url, func in resources.extra_apis
    ]  # fmt: skip
    resources.extra_apis.append(
        ("POST", "/v1/payment_intents/{id}/_expire_authorization", expire_authorization)
    )


def _disputes(resources: Any) -> None:
    """A dispute object Stripe's API would have, and the test helper that opens one."""

    class Dispute(resources.StripeObject):  # type: ignore[misc]
        object = "dispute"
        _id_prefix = "dp_"

        def __init__(self, charge: Any, reason: str) -> None:
            super().__init__()
            self.charge = charge.id
            self.payment_intent = getattr(charge, "payment_intent", None)
            self.amount = charge.amount
            self.currency = charge.currency
            self.reason = reason
            self.status = "needs_response"
            self.metadata: dict[str, str] = {}

    def open_dispute(id: str, reason: str = "fraudulent", **_: Any) -> Any:
        charge = resources.Charge._api_retrieve(id)
        dispute = Dispute(charge, reason)
        charge.disputed = True
        resources.schedule_webhook(resources.Event("charge.dispute.created", dispute))
        return dispute

    resources.extra_apis.extend((
        ("POST", "/v1/charges/{id}/_dispute", open_dispute),
        ("GET", "/v1/disputes/{id}", Dispute._api_retrieve),
    ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args()

    from aiohttp import web

    app = build_app()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO)
    print(f"stripe emulator (localstripe) listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        print=None,
        access_log=None if args.quiet else logging.getLogger("aiohttp.access"),
    )


if __name__ == "__main__":
    main()


def register_webhook_endpoint(
    emulator_url: str, endpoint: str, secret: str, *, name: str = "payments"
) -> None:
    """Have the emulator send its events of the types the service handles to ``endpoint``,
    signed with ``secret`` (Stripe-Signature), as a webhook endpoint in Stripe's dashboard
    would."""
    import httpx

    from shared.stripe.outcomes import HANDLED_EVENTS

    httpx.post(
        f"{emulator_url}/_config/webhooks/{name}",
        json={"url": endpoint, "secret": secret, "events": sorted(HANDLED_EVENTS)},
        timeout=10,
    ).raise_for_status()
