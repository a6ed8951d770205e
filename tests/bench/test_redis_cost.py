"""What make bench says GET /payments' indexes cost Redis, and `python -m bench --only cost`
rewriting only its section of PERFORMANCE.md."""

from __future__ import annotations

from bench import redis_cost, report
from bench.__main__ import Results
from bench.drain import DrainResult


def results() -> Results:
    cost = redis_cost.RedisCost(payments=10, commands=70.0, sent=15.0, round_trips=9.5)
    cost.kept_bytes = {"payments:record:{id}": 700.0, redis_cost.INDEX_KIND: 380.0}
    cost.index_commands, cost.index_by_command = 21.0, [("ZADD", 5.0), ("EXPIRE", 3.0)]
    out = Results()
    out.capped = DrainResult(2, 50.0, 10, 10, 10, 0, 10.0, 10.0, 1.0, cost=cost)
    return out


def test_index_commands_are_told_apart_by_their_keys() -> None:
    assert redis_cost._is_index("ZADD", b' "payments:client:listed:shop" "1" "pay_1"')
    assert redis_cost._is_index("ZREM", b' "payments:client:status:shop:queued" "pay_1"')
    assert redis_cost._is_index("HMGET", b' "payments:record:pay_1" "id" "client"')
    assert not redis_cost._is_index("ZADD", b' "payments:pending" "1" "pay_1"')
    assert not redis_cost._is_index("HMGET", b' "payments:record:pay_1" "status" "expires_ms"')


def test_the_section_says_what_the_indexes_add() -> None:
    section = report.cost_section(results())
    assert "commands run inside the scripts | 21.0 (ZADD 5.00, EXPIRE 3.00)" in section
    assert "GET /payments' indexes: bytes kept | 380 |" in section


def test_only_the_cost_section_is_rewritten() -> None:
    section = report.cost_section(results())
    old = (
        "# P\n\n### Drain\n\nd\n\n### What a payment costs Redis\n\nold figures\n\n"
        f"{report.BATCH_BEGIN}\nbatch\n{report.BATCH_END}\n\nkept"
    )
    first = report.with_cost_section(old, section)
    again = report.with_cost_section(first, section)

    assert "old figures" not in first
    assert first.startswith("# P\n\n### Drain\n\nd\n\n" + report.COST_BEGIN)
    assert first.endswith(
        f"{report.COST_END}\n\n{report.BATCH_BEGIN}\nbatch\n{report.BATCH_END}\n\nkept"
    )
    assert again == first
