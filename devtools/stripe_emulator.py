"""Run the localstripe emulator in-process, bound to one address, with its disk persistence off.

localstripe's own launcher binds every interface and pickles its whole store to the hard-coded
``/tmp/localstripe.pickle`` after every write (shared by every instance on the host, slower as the
store grows, and crashing on restart past ~64 KB). Here the store lives in memory only.

Two gaps are filled so that it answers like Stripe does for what this service uses:
- lists come back newest first (localstripe returns insertion order, oldest first);
- ``GET /v1/charges?customer=`` keeps its 404 for an unknown customer (already the case).

Usage: ``python -m devtools.stripe_emulator [--host 127.0.0.1] [--port 8420]``.
Flush between tests with ``DELETE /_config/data``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any


def build_app() -> Any:
    from localstripe import resources, server

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
    return server.app


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
