"""Identifiers for high-volume local records (receipts, holds, request ids).

They must be unique, not secret: nothing grants access by knowing one. So they
come from a PRNG seeded once per process from the OS, not from a system call
per id (on sandboxed kernels ``getrandom`` costs tens of microseconds, which
adds up on a gateway's hot path). Ids that protect something (API keys, admin
and top-up tokens) keep using ``secrets``.
"""

from __future__ import annotations

import os
import random
import threading

_state: dict[int, random.Random] = {}
_lock = threading.Lock()


def _rng() -> random.Random:
    pid = os.getpid()  # re-seed after a fork: a child must not repeat its parent
    rng = _state.get(pid)
    if rng is None:
        with _lock:
            rng = _state.setdefault(pid, random.Random(os.urandom(32)))
    return rng


def random_bits(bits: int) -> int:
    return _rng().getrandbits(bits)


def random_hex(nbytes: int) -> str:
    return f"{random_bits(nbytes * 8):0{nbytes * 2}x}"
