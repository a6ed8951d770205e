"""What a payment costs Redis: commands, round trips and bytes, from accept to the worker's ack.

Around a drain run: ``INFO commandstats`` and ``INFO stats`` before the payments are accepted and
after the last one is acknowledged (kombu's ``unacked`` empty), and a ``MONITOR`` connection
meanwhile, which tells the commands a client sent (each one a command on the wire; a pipeline
sends several per round trip) from those a Lua script ran inside Redis (``[0 lua]``). Round trips
are Redis's own count of socket reads it processed (``total_reads_processed``): one per request
or pipeline a client sent. Bytes: ``MEMORY USAGE`` of the queue list while the payments wait in
it, and of every key left once they are done (records and indexes), per payment.

The indexes of GET /payments (a client's sets by creation, status and customer, written inside
the accept script and moved inside the scripts that move a status) are told apart: the
commands on their keys, and ``index_move``'s read of the record's id and client, counted by
``MONITOR``; their keys' bytes per payment.
"""

from __future__ import annotations

import collections
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import redis

from shared.store import keys

INDEX_PREFIXES = (keys.CLIENT_LISTED_PREFIX, keys.CLIENT_STATUS_PREFIX, keys.CLIENT_CUSTOMER_PREFIX)
INDEX_KIND = "payments:client:{listed,status,customer}:* (GET /payments)"

_ID = re.compile(rb"pay_[0-9A-Za-z]+")
_LINE = re.compile(rb'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"(.*)$')


def stats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("stats")
    out = {
        "commands": int(info["total_commands_processed"]),
        "reads": int(info.get("total_reads_processed", 0)),
    }
    for name, value in client.info("commandstats").items():
        out["cmd:" + name.removeprefix("cmdstat_").upper()] = int(value["calls"])
    return out


class Monitor:
    """A MONITOR connection counting commands by source (a client or a script) and name."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self._sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379))
        self._sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.sent: collections.Counter[str] = collections.Counter()
        self.in_scripts: collections.Counter[str] = collections.Counter()
        # Of those, the commands of GET /payments' indexes (sent, or inside scripts).
        self.index: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                m = _LINE.match(line.lstrip(b"+"))
                if m is None:
                    continue
                name = m.group(2).decode().upper()
                if _is_index(name, m.group(3)):
                    self.index[name] += 1
                if m.group(1) == b"lua":
                    self.in_scripts[name] += 1
                else:
                    self.sent[name] += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def _is_index(name: str, rest: bytes) -> bool:
    """A command on an index key, or index_move's read of the record's id and client."""
    args = rest.strip().split(b'" "')
    first = args[0].strip(b'"') if args else b""
    if first.decode(errors="replace").startswith(INDEX_PREFIXES):
        return True
    return name == "HMGET" and [a.strip(b'"') for a in args[1:]] == [b"id", b"client"]


@dataclass
class RedisCost:
    payments: int
    commands: float = 0.0  # per payment, every command Redis ran (scripts' inner ones too)
    sent: float = 0.0  # per payment, commands clients sent
    round_trips: float = 0.0  # per payment, socket reads Redis processed
    by_command: list[tuple[str, float, float]] = field(default_factory=list)  # name, sent, in Lua
    queued_bytes: float = 0.0  # per payment waiting in the queue list
    kept_bytes: dict[str, float] = field(default_factory=dict)  # key kind -> bytes per payment
    fixed_bytes: dict[str, int] = field(default_factory=dict)  # keys of no payment -> bytes
    # per payment, the commands of GET /payments' indexes (all inside scripts), by name
    index_commands: float = 0.0
    index_by_command: list[tuple[str, float]] = field(default_factory=list)
    idle_commands_per_s: float = 0.0  # the workers' background polling, for scale
    seconds: float = 0.0

    @property
    def kept_total(self) -> float:
        return sum(self.kept_bytes.values())


def queue_bytes(client: redis.Redis, queue: str) -> tuple[int, int]:
    """MEMORY USAGE of the queue list (all its elements), and its length."""
    return int(client.memory_usage(queue, samples=0) or 0), int(client.llen(queue))


def kept_bytes(client: redis.Redis, payments: int) -> tuple[dict[str, float], dict[str, int]]:
    """Every key left: those of a payment (its id in the key, replaced by ``{id}``) in bytes
    per payment, and the fixed ones (indexes, counters, kombu's bindings) in bytes."""
    per: collections.Counter[str] = collections.Counter()
    fixed: collections.Counter[str] = collections.Counter()
    for key in client.scan_iter(count=1000):
        size = int(client.memory_usage(key, samples=0) or 0)
        if key.decode(errors="replace").startswith(INDEX_PREFIXES):
            per[INDEX_KIND] += size
            continue
        kind = _ID.sub(b"{id}", key)
        (per if kind != key else fixed)[kind.decode(errors="replace")] += size
    return {k: v / payments for k, v in per.most_common()}, dict(fixed.most_common())


def per_payment(
    before: dict[str, int], after: dict[str, int], monitor: Monitor, payments: int
) -> RedisCost:
    cmd = {k: after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("cmd:")}
    cost = RedisCost(payments=payments)
    cost.commands = sum(v for v in cmd.values() if v > 0) / payments
    cost.round_trips = (after["reads"] - before["reads"]) / payments
    cost.sent = sum(monitor.sent.values()) / payments
    names = set(monitor.sent) | set(monitor.in_scripts)
    rows = [(n, monitor.sent[n] / payments, monitor.in_scripts[n] / payments) for n in names]
    cost.by_command = sorted(rows, key=lambda r: -(r[1] + r[2]))
    cost.index_commands = sum(monitor.index.values()) / payments
    cost.index_by_command = [(n, c / payments) for n, c in monitor.index.most_common()]
    return cost
