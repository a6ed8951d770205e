"""The workers' Stripe HTTP client: each thread keeps its own connection alive, so a worker's
threads neither queue on one shared pool nor open a new connection for most calls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.stripe_gateway import ThreadLocalHTTPXClient

THREADS = 128  # WORKER_CONCURRENCY's default; httpx's default pool holds 100, keeps 20 alive


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # every thread connects at once
    connections = 0
    lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        server = self.server
        assert isinstance(server, _Server)
        with server.lock:
            server.connections += 1

    def do_GET(self) -> None:
        body = b'{"id": "cus_1"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_each_thread_keeps_one_connection_however_many_calls(server: _Server) -> None:
    client = ThreadLocalHTTPXClient(timeout=5)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/customers/cus_1"
    barrier = threading.Barrier(THREADS)

    def calls(_: int) -> list[int]:
        statuses = []
        for _ in range(3):  # every thread calls at the same time, three times over
            barrier.wait(timeout=60)
            answer = client.request("get", url, headers={})
            statuses.append(answer[1])
        return statuses

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(calls, range(THREADS)))

    assert all(statuses == [200, 200, 200] for statuses in results)
    assert server.connections == THREADS  # one per thread, each reused: none opened again
