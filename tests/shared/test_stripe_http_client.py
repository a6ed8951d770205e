"""The workers' Stripe HTTP client (libcurl, one handle a thread), against a real HTTP server on
a socket: each thread keeps its own connection alive; what the SDK reads from an answer (status,
body, headers) arrives whole; every way a call can fail is a connection error, which the worker
retries with the same idempotency key."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import stripe

from shared.stripe.http_client import ThreadLocalCurlClient
from shared.stripe.outcomes import TransientStripeError
from shared.stripe.sdk_errors import describe, translate_error

THREADS = 128  # WORKER_CONCURRENCY's default


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

    def _answer(self, status: int, body: Mapping[str, object], **headers: str) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Request-Id", "req_test1")
        self.send_header("Vary", "Origin")
        self.send_header("Vary", "Accept-Encoding")  # a repeated header
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(3)
        if self.path.startswith("/drop"):
            self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all
            return
        if self.path.startswith("/v1/charges"):  # Stripe's answer to too many requests
            error = {"error": {"type": "invalid_request_error", "code": "rate_limit",
                               "message": "Too many requests"}}  # fmt: skip
            self._answer(429, error, Retry_After="3", Stripe_Should_Retry="true")
            return
        self._answer(200, {"id": "cus_1", "object": "customer"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        sent = {name.lower(): value for name, value in self.headers.items()}
        self._answer(200, {"body": body, "headers": sent})

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


def _url(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_each_thread_keeps_one_connection_however_many_calls(server: _Server) -> None:
    client = ThreadLocalCurlClient(timeout=5)
    barrier = threading.Barrier(THREADS)

    def calls(_: int) -> list[int]:
        statuses = []
        for _ in range(3):  # every thread calls at the same time, three times over
            barrier.wait(timeout=60)
            answer = client.request("get", _url(server, "/v1/customers/cus_1"), headers={})
            statuses.append(answer[1])
        return statuses

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(calls, range(THREADS)))
    client.close()

    assert all(statuses == [200, 200, 200] for statuses in results)
    assert server.connections == THREADS  # one per thread, each reused: none opened again


def test_the_answer_arrives_whole(server: _Server) -> None:
    client = ThreadLocalCurlClient(timeout=5)
    body, status, headers = client.request(
        "post",
        _url(server, "/v1/payment_intents"),
        headers={"Authorization": "Bearer sk_test_x", "Idempotency-Key": "pay_1:charge"},
        post_data="amount=4299&currency=usd",
    )
    sent = json.loads(body)
    assert status == 200
    assert sent["body"] == "amount=4299&currency=usd"
    assert sent["headers"]["idempotency-key"] == "pay_1:charge"
    assert "expect" not in sent["headers"]  # no waiting for a 100 Continue
    assert headers["request-id"] == "req_test1"  # names lower-case, as the SDK reads them
    assert headers["vary"] == "Origin, Accept-Encoding"


def test_stripe_errors_keep_their_retry_headers(server: _Server) -> None:
    sdk = stripe.StripeClient(
        "sk_test_x",
        base_addresses={"api": _url(server, "")},
        http_client=ThreadLocalCurlClient(timeout=5),
        max_network_retries=0,
    )
    with pytest.raises(stripe.RateLimitError) as raised:
        sdk.raw_request("get", "/v1/charges", customer="cus_1")
    failure = describe(raised.value)
    assert (failure.kind, failure.http_status) == ("rate_limit", 429)
    assert failure.retry_after == 3.0
    assert failure.should_retry is True


@pytest.mark.parametrize(
    ("path", "timeout"),
    [("/slow", 0.5), ("/drop", 5.0)],
    ids=["timed out", "connection closed without an answer"],
)
def test_a_call_without_an_answer_is_a_transient_connection_error(
    server: _Server, path: str, timeout: float
) -> None:
    client = ThreadLocalCurlClient(timeout=timeout)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError) as raised:
        client.request("get", _url(server, path), headers={})
    assert time.monotonic() - started < 2.5  # the timeout holds, not the server's 3 s
    assert describe(raised.value).kind == "connection"
    assert isinstance(translate_error(raised.value), TransientStripeError)


def test_a_refused_connection_is_a_transient_connection_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ThreadLocalCurlClient(timeout=2)
    with pytest.raises(stripe.APIConnectionError, match="curl error 7"):
        client.request("get", f"http://127.0.0.1:{port}/v1/customers/cus_1", headers={})


def test_a_connection_the_server_closed_is_replaced(server: _Server) -> None:
    client = ThreadLocalCurlClient(timeout=5)
    url = _url(server, "/v1/customers/cus_1")
    assert client.request("get", url, headers={})[1] == 200
    with pytest.raises(stripe.APIConnectionError):
        client.request("get", _url(server, "/drop"), headers={})
    assert client.request("get", url, headers={})[1] == 200  # a new connection, no error


class _AnswerOnceHandler(_Handler):
    """Answers the first request of a connection, reads the second and closes without a word:
    Stripe may have acted on it, and its answer is lost."""

    posts = 0

    def do_POST(self) -> None:
        type(self).posts += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).posts == 1:
            self._answer(200, {"id": "pi_1"})
            return
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def test_a_write_whose_answer_was_lost_is_never_sent_again_by_the_client() -> None:
    srv = _Server(("127.0.0.1", 0), _AnswerOnceHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = ThreadLocalCurlClient(timeout=5)
        url = _url(srv, "/v1/payment_intents")
        assert client.request("post", url, headers={}, post_data="amount=1")[1] == 200
        # The kept-alive connection takes the next write, which goes out and gets no answer:
        # libcurl would resend it on a new connection; the worker must see it fail instead.
        with pytest.raises(stripe.APIConnectionError):
            client.request("post", url, headers={}, post_data="amount=2")
        assert _AnswerOnceHandler.posts == 2
        assert srv.connections == 1
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[_Server]:
    """The same server behind TLS, with a self-signed certificate no CA vouches for."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_a_server_whose_certificate_no_ca_vouches_for_is_refused(tls_server: _Server) -> None:
    url = f"https://127.0.0.1:{tls_server.server_address[1]}/v1/customers/cus_1"
    with pytest.raises(stripe.APIConnectionError, match="curl error 60"):
        ThreadLocalCurlClient(timeout=5).request("get", url, headers={})
    # The same server answers once verification is off: it was the certificate that failed.
    unverified = ThreadLocalCurlClient(timeout=5, verify_ssl_certs=False)
    assert unverified.request("get", url, headers={})[1] == 200
