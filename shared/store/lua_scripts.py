"""The Lua scripts of ``shared/store/lua``, each loaded with the statuses of the Python enum.

A script sees ``STATUS.<NAME>`` (every ``Status``) and ``FINAL[status]`` (the final ones),
generated from ``shared.payments.payment_records``, so no status is spelled inside Lua. Each script
takes one
JSON object of named arguments (``ARGV[1]``), decoded as ``a``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from shared.payments.payment_records import FINAL_STATUSES, Status

LUA_DIR = Path(__file__).with_name("lua")


def _preamble() -> str:
    names = ", ".join(f"{s.name} = '{s.value}'" for s in Status)
    final = ", ".join(f"['{s.value}'] = true" for s in sorted(FINAL_STATUSES))
    return f"local STATUS = {{{names}}}\nlocal FINAL = {{{final}}}\n"


# Functions more than one script uses, by script, prepended after the preamble (lib/common.lua
# to every script). lib/callbacks.lua: every script that pushes a callback message files it
# for the callbacks' recovery sweep in the same step.
_PUSHES_CALLBACKS = ("finish", "transition", "stripe_refunds", "refund_finish",
                     "requeue_callbacks", "replay_callback")  # fmt: skip
LIBRARIES = {
    "accept": ("token_bucket",),
    "take_token": ("token_bucket",),
    **{name: ("callbacks",) for name in _PUSHES_CALLBACKS},
}


@cache
def source(name: str) -> str:
    """The script ``lua/<name>.lua`` with its preamble (and the library functions it uses)."""
    libraries = "".join(
        (LUA_DIR / "lib" / f"{lib}.lua").read_text() for lib in ("common", *LIBRARIES.get(name, ()))
    )
    return _preamble() + libraries + (LUA_DIR / f"{name}.lua").read_text()
