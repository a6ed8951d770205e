"""The Lua scripts of ``shared/store/lua``, each loaded with the statuses and its own moves.

A script sees ``STATUS.<NAME>`` (every ``Status``), ``FINAL[status]`` (the final ones),
``UNSENT[status]`` (those for which nothing was sent to Stripe yet),
``REFUND_STATUS.<NAME>`` and ``REFUND_FINAL[status]`` likewise for refunds (and
``CAPTURE_STATUS``, ``CAPTURE_FINAL`` for a payment's capture or void), ``STATUSES`` (every
status, a list), ``INDEX`` (the prefixes of the client's list sets, ``shared.store.keys``),
and its own rows of the state machine (``shared.payments.states``) as ``MOVES[from][to]`` and
``REFUND_MOVES[from][to]`` (asked through ``may_move`` of lib/common.lua), all generated from
Python, so no status and no move is spelled inside Lua. Each script takes one JSON object of
named arguments (``ARGV[1]``), decoded as ``a``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from pathlib import Path

from shared.payments.states import (
    FINAL_CAPTURE_STATUSES,
    FINAL_REFUND_STATUSES,
    FINAL_STATUSES,
    UNSENT_STATUSES,
    CaptureStatus,
    Move,
    RefundStatus,
    Status,
    payment_moves,
    refund_moves,
)
from shared.store import keys

LUA_DIR = Path(__file__).with_name("lua")


def _names(statuses: Iterable[StrEnum]) -> str:
    return "{" + ", ".join(f"{s.name} = '{s.value}'" for s in statuses) + "}"


def _set(statuses: Iterable[StrEnum]) -> str:
    return "{" + ", ".join(f"['{s.value}'] = true" for s in sorted(statuses)) + "}"


def _moves(rows: Iterable[Move[Status]] | Iterable[Move[RefundStatus]]) -> str:
    targets: dict[str, set[StrEnum]] = {}
    for row in rows:
        targets.setdefault(row.source.value, set()).add(row.target)
    return "{" + ", ".join(f"['{s}'] = {_set(t)}" for s, t in sorted(targets.items())) + "}"


def _preamble(name: str) -> str:
    return (
        f"local STATUS = {_names(Status)}\n"
        f"local FINAL = {_set(FINAL_STATUSES)}\n"
        f"local UNSENT = {_set(UNSENT_STATUSES)}\n"
        f"local REFUND_STATUS = {_names(RefundStatus)}\n"
        f"local REFUND_FINAL = {_set(FINAL_REFUND_STATUSES)}\n"
        f"local CAPTURE_STATUS = {_names(CaptureStatus)}\n"
        f"local CAPTURE_FINAL = {_set(FINAL_CAPTURE_STATUSES)}\n"
        f"local MOVES = {_moves(payment_moves(name))}\n"
        f"local REFUND_MOVES = {_moves(refund_moves(name))}\n"
        f"local STATUSES = {{{', '.join(repr(s.value) for s in Status)}}}\n"
        f"local INDEX = {{listed = '{keys.CLIENT_LISTED_PREFIX}', "
        f"status = '{keys.CLIENT_STATUS_PREFIX}', customer = '{keys.CLIENT_CUSTOMER_PREFIX}'}}\n"
    )


# Functions more than one script uses, by script, prepended after the preamble (lib/common.lua
# to every script). lib/callbacks.lua: every script that pushes a callback message files it
# for the callbacks' recovery sweep in the same step.
_PUSHES_CALLBACKS = ("finish", "transition", "stripe_refunds", "refund_finish", "capture_finish",
                     "requeue_callbacks", "replay_callback")  # fmt: skip
LIBRARIES = {
    # accept.lua: one payment's accept or a batch's, each item's token from the client's bucket.
    "accept": ("token_bucket",),
    "take_token": ("token_bucket",),
    **{name: ("callbacks",) for name in _PUSHES_CALLBACKS},
    # lib/unsent.lua: the end of a payment never sent to Stripe (expired, canceled).
    "expire": ("callbacks", "unsent"),
    "cancel": ("callbacks", "unsent"),
    # lib/requeue.lua: the recovery sweep's push of a message provably lost.
    **{name: ("requeue",) for name in ("requeue_stale", "requeue_refund", "requeue_capture")},
}


@cache
def source(name: str) -> str:
    """The script ``lua/<name>.lua`` with its preamble (and the library functions it uses)."""
    libraries = "".join(
        (LUA_DIR / "lib" / f"{lib}.lua").read_text() for lib in ("common", *LIBRARIES.get(name, ()))
    )
    return _preamble(name) + libraries + (LUA_DIR / f"{name}.lua").read_text()
