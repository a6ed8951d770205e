"""The workers' HTTP client for the Stripe SDK: libcurl, one handle per thread."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import pycurl
import stripe


class _ResponseHeaders:
    """libcurl hands over a response's header lines one by one; a new status line (after a
    ``100 Continue``, say) starts the set again. Names are kept lower-case, as the SDK and
    ``describe`` read them; a repeated header's values are joined with ", " (RFC 9110)."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def line(self, raw: bytes) -> None:
        text = raw.decode("iso-8859-1")
        if text.startswith("HTTP/"):
            self.headers = {}
            return
        name, sep, value = text.partition(":")
        if not sep:
            return  # the blank line that ends the headers
        key, value = name.strip().lower(), value.strip()
        self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value


class ThreadLocalCurlClient(stripe.HTTPClient):
    """The workers' synchronous Stripe calls over libcurl (pycurl), one easy handle (and so one
    kept-alive connection) per thread.

    Why not the SDK's clients: a worker's charge is CPU-bound on its process's one core, and
    the HTTP client was the largest share of it; libcurl costs the least CPU per call of the
    clients the SDK can use (docs/PERFORMANCE.md, drain, has the figures). The SDK's
    PycurlClient shares one handle between threads (it is not thread-safe) and fixes its
    timeouts at 30 s to connect and 80 s in all; this one takes STRIPE_TIMEOUT_SECONDS for the
    whole call, like the other clients here.

    Every libcurl failure (refused, reset, timed out, TLS) is a ``stripe.APIConnectionError``,
    as with the SDK's own clients: ``describe`` makes it a transient failure, and the charge
    is retried with the same idempotency key. A proxy is taken from the standard environment
    variables (``HTTPS_PROXY``, ``NO_PROXY``) by libcurl itself, as httpx did.
    """

    name = "pycurl"

    def __init__(self, *, timeout: float, verify_ssl_certs: bool = True) -> None:
        super().__init__(verify_ssl_certs=verify_ssl_certs)
        self._timeout_ms = max(1, int(timeout * 1000))
        self._local = threading.local()
        self._handles: list[pycurl.Curl] = []  # every thread's, for close()
        self._lock = threading.Lock()

    def _handle(self) -> pycurl.Curl:
        curl: pycurl.Curl | None = getattr(self._local, "curl", None)
        if curl is None:
            curl = self._local.curl = pycurl.Curl()
            with self._lock:
                self._handles.append(curl)
        return curl

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        curl = self._handle()
        # reset() clears the options of the last call but keeps its connection open.
        curl.reset()
        body = BytesIO()
        answer = _ResponseHeaders()
        if method == "get":
            curl.setopt(pycurl.HTTPGET, 1)
        elif method == "post":
            # The body through a read function that cannot rewind, not POSTFIELDS: when a
            # kept-alive connection closes after the request went out and before any answer,
            # libcurl would send the request again on a new connection by itself. Here it
            # cannot, and the call fails as with every other client: whether Stripe acted is
            # unknown, and the worker looks before it writes again (worker.charge, rule 2).
            data = (post_data or "").encode()
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDSIZE, len(data))
            curl.setopt(pycurl.READFUNCTION, BytesIO(data).read)
        else:
            curl.setopt(pycurl.CUSTOMREQUEST, method.upper())
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.WRITEDATA, body)
        curl.setopt(pycurl.HEADERFUNCTION, answer.line)
        curl.setopt(pycurl.NOSIGNAL, 1)  # threads: timeouts without SIGALRM
        curl.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        # "Expect:" stops libcurl from waiting for a 100 Continue before a larger body.
        lines = [f"{name}: {value}" for name, value in (headers or {}).items()]
        curl.setopt(pycurl.HTTPHEADER, [*lines, "Expect:"])
        if self._verify_ssl_certs:
            curl.setopt(pycurl.CAINFO, stripe.ca_bundle_path)
        else:
            curl.setopt(pycurl.SSL_VERIFYPEER, 0)
            curl.setopt(pycurl.SSL_VERIFYHOST, 0)
        try:
            curl.perform()
        except pycurl.error as exc:
            code, message = (*exc.args, 0, "")[:2]
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"Network error talking to Stripe: {message} (curl error {code})",
                should_retry=True,
            ) from exc
        status = int(curl.getinfo(pycurl.RESPONSE_CODE))
        return body.getvalue().decode("utf-8"), status, answer.headers

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for curl in handles:
            curl.close()
