"""Dead letters: payments that failed because Stripe stayed unreachable, kept for an operator.

    python -m worker.dead_letters list
    python -m worker.dead_letters replay pay_0123...      # one
    python -m worker.dead_letters replay evt_0123...      # one callback
    python -m worker.dead_letters replay --all            # every one

A replay puts the payment back in the queue as it was (same payment id, so the same Stripe
idempotency key) and marks it to be reconciled first: a charge that did go through after all is
found and adopted, never made twice. The client that was told "failed, not charged" sees the
payment move to queued again when it polls.

Callbacks whose retries ran out (or whose endpoint was refused) are dead letters too
(``evt_…``): a replay sends the same event (same ``webhook-id``) with a fresh retry budget.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from shared.payments.money import format_minor
from shared.redis_clients import sync_redis
from shared.settings.service_settings import get_settings
from shared.store import PaymentStore
from shared.store.callback_store import CallbackStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.dead_letters", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="show the dead letters")
    replay_parser = commands.add_parser("replay", help="requeue dead letters")
    replay_parser.add_argument("payment_ids", nargs="*")
    replay_parser.add_argument("--all", action="store_true", help="every dead letter")
    args = parser.parse_args(argv)

    settings = get_settings()
    store = PaymentStore(sync_redis(settings), settings)
    callbacks = CallbackStore(sync_redis(settings), settings)
    entries = store.dead_letters()
    callback_entries = callbacks.dead_letters()
    if args.command == "list":
        if not entries and not callback_entries:
            print("no dead letters")
        for event_id, fields, score in callback_entries:
            when = datetime.fromtimestamp(score, UTC).isoformat(timespec="seconds")
            print(f"{event_id}  {when}  callback {fields.get('event_type', '-')}  "
                  f"{fields.get('payment_id', '-')}  {fields.get('attempts', '-')} attempts  "
                  f"{fields.get('reason', '-')}")  # fmt: skip
        for payment_id, record, score in entries:
            when = datetime.fromtimestamp(score, UTC).isoformat(timespec="seconds")
            if record is None:
                print(f"{payment_id}  {when}  (record expired)")
                continue
            code = (record.error or {}).get("code", "-")
            amount = format_minor(record.amount_minor, record.currency)
            print(f"{payment_id}  {when}  {record.account_id}  {amount} {record.currency}  {code}")
        return 0
    targets = (
        [pid for pid, _, _ in entries] + [evt for evt, _, _ in callback_entries]
        if args.all
        else args.payment_ids
    )
    by_event = {evt: fields for evt, fields, _ in callback_entries}
    if not targets:
        parser.error("name payment ids to replay, or --all")
    failures = 0
    for payment_id in targets:
        if payment_id.startswith("evt_"):
            from worker.callback_delivery import replay_message

            kept = by_event.get(payment_id)
            if kept and callbacks.replay(payment_id, replay_message(settings, kept)):
                print(f"requeued callback {payment_id}")
            else:
                failures += 1
                print(f"{payment_id} is not a dead letter", file=sys.stderr)
            continue
        if store.replay(payment_id):
            print(f"requeued {payment_id}")
        else:
            failures += 1
            print(f"{payment_id} is not a dead letter", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
