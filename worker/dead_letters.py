"""Dead letters: payments that failed because Stripe stayed unreachable, kept for an operator.

    python -m worker.dead_letters list
    python -m worker.dead_letters replay pay_0123...      # one
    python -m worker.dead_letters replay --all            # every one

A replay puts the payment back in the queue as it was (same payment id, so the same Stripe
idempotency key: a charge that did go through after all is adopted, never made twice). The
client that was told "failed, not charged" sees the payment move to queued again when it polls.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import redis

from shared.celery_message import charge_message
from shared.config import Settings, get_settings
from shared.money import format_minor
from shared.records import (
    DEAD_LETTERS,
    PENDING,
    PaymentRecord,
    now_iso,
    record_key,
)
from shared.redis_clients import sync_redis

# Requeues KEYS[1] (record) if it is still a failed dead letter in KEYS[2]: status back to
# queued, error and attempt count cleared, message ARGV[2] pushed on queue KEYS[3].
REPLAY_SCRIPT = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'failed' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return -1
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[3], 'attempts', 0)
redis.call('HDEL', KEYS[1], 'error', 'error_status')
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return 1
"""


def list_dead_letters(client: redis.Redis) -> list[tuple[PaymentRecord | None, str, float]]:
    entries: list[tuple[bytes, float]] = client.zrange(DEAD_LETTERS, 0, -1, withscores=True)  # type: ignore[assignment]
    result = []
    for member, score in entries:
        payment_id = member.decode()
        raw = client.hgetall(record_key(payment_id))
        record = PaymentRecord.from_redis(raw) if raw else None
        result.append((record, payment_id, score))
    return result


def replay(client: redis.Redis, settings: Settings, payment_id: str) -> bool:
    """Requeue one dead letter; False if it is not (or no longer) one."""
    message = charge_message(payment_id, queue=settings.queue_name, headers={"replayed": True})
    script = client.register_script(REPLAY_SCRIPT)
    done = script(
        keys=[record_key(payment_id), DEAD_LETTERS, settings.queue_name, PENDING],
        args=[payment_id, message, now_iso(), int(time.time()) + settings.sweep_stale_seconds],
    )
    return bool(done == 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.dead_letters", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="show the dead letters")
    replay_parser = commands.add_parser("replay", help="requeue dead letters")
    replay_parser.add_argument("payment_ids", nargs="*")
    replay_parser.add_argument("--all", action="store_true", help="every dead letter")
    args = parser.parse_args(argv)

    settings = get_settings()
    client = sync_redis(settings)
    entries = list_dead_letters(client)
    if args.command == "list":
        if not entries:
            print("no dead letters")
        for record, payment_id, score in entries:
            when = datetime.fromtimestamp(score, UTC).isoformat(timespec="seconds")
            if record is None:
                print(f"{payment_id}  {when}  (record expired)")
                continue
            code = (record.error or {}).get("code", "-")
            amount = format_minor(record.amount_minor, record.currency)
            print(f"{payment_id}  {when}  {record.account_id}  {amount} {record.currency}  {code}")
        return 0
    targets = [pid for _, pid, _ in entries] if args.all else args.payment_ids
    if not targets:
        parser.error("name payment ids to replay, or --all")
    failures = 0
    for payment_id in targets:
        if replay(client, settings, payment_id):
            print(f"requeued {payment_id}")
        else:
            failures += 1
            print(f"{payment_id} is not a dead letter", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
