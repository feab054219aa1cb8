"""Who builds a dataset version, and when a builder is known to be gone.

Several API servers may share one database and data dir, so a version IN_PROGRESS may be another
live server's build. Its row names its builder and a `heartbeat_at` the builder refreshes every
`BUILD_BEAT_S` while it builds (`tuneloom.server.builds`); a build silent for longer than
`BUILD_LEASE_S` is one whose server died, and any server may fail it (`store.recovery`).

A builder id is `host:scope:pid:instance`, with a fresh random `instance` per process. `scope`
hashes the kernel's boot id and the process's PID namespace: two ids with the same scope name
processes whose pids are comparable (same boot, same PID namespace, even in containers that share
a hostname). Within one scope a builder is certainly gone when its pid runs nothing, or when its pid
is the asking process's own under another instance id (a restart that got the same pid, as in a
container). So a server restarting after its own crash fails its builds at once, not after the
lease; anything less certain (another machine, a pid now reused) waits for the lease. Where there
is no /proc to read, the scope is empty and only the lease applies.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from pathlib import Path

BUILD_LEASE_S = 60.0  # a build silent this long is one whose server died
BUILD_BEAT_S = 5.0  # how often a building server says it still builds (well within the lease)


def _process_scope() -> str:
    """What makes pids comparable: the boot and the PID namespace ("" where that cannot be read)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:12]


def new_builder_id() -> str:
    return f"{socket.gethostname()}:{_process_scope()}:{os.getpid()}:{secrets.token_hex(4)}"


THIS_PROCESS = new_builder_id()  # this process's builds (one id per process, see the module docstring)


def is_gone(builder: str, *, me: str = THIS_PROCESS) -> bool:
    """Whether `builder` is certainly no longer running, as far as process `me` can tell."""
    if builder == me:
        return False
    try:
        _, scope, pid, _ = builder.rsplit(":", 3)
        _, my_scope, my_pid, _ = me.rsplit(":", 3)
    except ValueError:
        return False  # not an id this code wrote: only the lease applies
    if not scope or scope != my_scope or not pid.isdigit():
        return False
    return pid == my_pid or not _runs(int(pid))


def _runs(pid: int) -> bool:
    """Whether some process has `pid` (signal 0 checks without sending anything)."""
    if pid <= 0:
        return True  # never a process of its own: not evidence of anything
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a pid this system cannot have
        return True
    return True
