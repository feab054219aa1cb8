"""The `distributed` setting: how many processes (and machines) train one model version, and how.

It sits beside the five settings and is validated the same way (unknown keys refused with a
suggestion, numbers range-checked, strings matched case-insensitively), but it feeds
`accelerate launch` rather than a Hugging Face class:

| key               | default | meaning                                                          |
|-------------------|---------|------------------------------------------------------------------|
| strategy          | "ddp"   | ddp, fsdp, deepspeed_zero2, deepspeed_zero3 or none             |
| num_processes     | 1       | processes in total, over all machines (one per GPU)             |
| num_machines      | 1       | machines taking part                                            |
| machine_rank      | 0       | this machine's rank (0 is the one that writes the model version) |
| main_process_ip   | —       | rank 0's address; required with several machines                |
| main_process_port | 0/29500 | rank 0's rendezvous port; 0 (one machine) picks a free one       |

The normal form is `{}` for a plain one-process run (no setting, `strategy: "none"`, or DDP with a
single process), so single-process manifests are unchanged; any other value is stored with every
key filled in.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from tuneloom.errors import SettingsError
from tuneloom.templates.settings_fields import coerce, pick_choice, suggest
from tuneloom.templates.settings_rules import INT, STR, Range, kind_of

DISTRIBUTED = "distributed"
STRATEGIES = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "none")
SHARDED_STRATEGIES = ("fsdp", "deepspeed_zero2", "deepspeed_zero3")  # accelerate runs these on GPUs only
DEFAULTS: dict[str, Any] = {
    "strategy": "ddp",
    "num_processes": 1,
    "num_machines": 1,
    "machine_rank": 0,
    "main_process_ip": None,
    "main_process_port": None,  # 0 (a free port) on one machine, 29500 over several
}
_RANGES = {
    "num_processes": Range(1, 4096),
    "num_machines": Range(1, 1024),
    "machine_rank": Range(0, 1023),
    "main_process_port": Range(0, 65535),
}
_LABEL = re.compile(r"^[A-Za-z0-9]([\w\-]{0,61}[A-Za-z0-9])?$", re.ASCII)  # a host name's part (RFC 1123, and `_`)
ONE_MACHINE = (
    "a worker trains on its own machine (num_machines 1, any num_processes); a run over several machines "
    "is started with `tuneloom train --num-machines N` on each machine"
)


def check_distributed(value: Any) -> dict[str, Any]:
    """The validated, normalised `distributed` setting (see the module docstring), or SettingsError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(f"{DISTRIBUTED} must be an object ({{...}}), not {kind_of(value)}", key=DISTRIBUTED)
    merged = dict(DEFAULTS)
    problems: list[SettingsError] = []
    for key, given in value.items():
        path = f"{DISTRIBUTED}.{key}"
        if key not in DEFAULTS:
            problems.append(
                SettingsError(
                    f"{path} is not a distributed setting.{suggest(key, DEFAULTS)} Keys are: {', '.join(DEFAULTS)}.",
                    key=path,
                )
            )
        elif given is not None:
            merged[key] = SettingsError.collect(problems, _check_value, path, key, given)
    SettingsError.raise_all(problems)  # every wrong key at once; the rules between keys need them all right
    _check_together(merged)
    if merged["strategy"] == "none" or (merged["strategy"] == "ddp" and merged["num_processes"] == 1):
        return {}
    return merged


def _check_value(path: str, key: str, value: Any) -> Any:
    if key == "strategy":
        return pick_choice(path, coerce(path, value, STR), STRATEGIES)
    if key == "main_process_ip":
        return _check_host(path, coerce(path, value, STR).strip())
    number = int(coerce(path, value, INT))
    if not _RANGES[key].contains(number):
        raise SettingsError(f"{path} must be {_RANGES[key].describe()} (got {value})", key=path)
    return number


def _check_together(d: dict[str, Any]) -> None:
    """Rules between keys: ranks inside the machine count, processes spread evenly, an address to meet at."""
    machines, processes = d["num_machines"], d["num_processes"]
    if d["machine_rank"] >= machines:
        raise SettingsError(
            f"{DISTRIBUTED}.machine_rank must be below num_machines ({machines}); got {d['machine_rank']}",
            key=f"{DISTRIBUTED}.machine_rank",
        )
    if processes < machines or processes % machines:
        raise SettingsError(
            f"{DISTRIBUTED}.num_processes ({processes}) counts processes over all machines and must be a "
            f"multiple of num_machines ({machines})",
            key=f"{DISTRIBUTED}.num_processes",
        )
    if d["main_process_port"] is None:
        d["main_process_port"] = 0 if machines == 1 else 29500
    if machines > 1 and d["main_process_port"] == 0:
        raise SettingsError(
            f"{DISTRIBUTED}.main_process_port must be a fixed port with {machines} machines (all of them meet there)",
            key=f"{DISTRIBUTED}.main_process_port",
        )
    if machines == 1 and d["main_process_ip"]:
        # On one machine the ranks meet on loopback; an address here would only let a settings dict
        # point a worker's processes at another host.
        raise SettingsError(
            f"{DISTRIBUTED}.main_process_ip is only for runs over several machines (num_machines is 1)",
            key=f"{DISTRIBUTED}.main_process_ip",
        )
    if machines > 1 and not d["main_process_ip"]:
        raise SettingsError(
            f"{DISTRIBUTED}.main_process_ip is required with {machines} machines: the address of the "
            "machine with machine_rank 0, where the others meet",
            key=f"{DISTRIBUTED}.main_process_ip",
        )


def _check_host(path: str, host: str) -> str:
    """An IP address or a host name; rank 0's port is its own key, so `host:port` is refused by name.

    Anything else reached torchrun, whose ranks retried the address until its rendezvous timed out.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) <= 253 and all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit():
        return host
    if host.count(":") == 1 and host.rsplit(":", 1)[1].isdigit():
        raise SettingsError(
            f"{path} must be an address without a port (got {host!r}); give the port as main_process_port",
            key=path,
        )
    _refuse_bracketed(path, host)
    raise SettingsError(f"{path} must be a host name or IP address (got {host!r})", key=path)


_BRACKETED = re.compile(r"^\[(?P<address>[^\]]*)\](:(?P<port>\d+))?$")  # a URL's IPv6 form: [::1]:29500


def _refuse_bracketed(path: str, host: str) -> None:
    """Refuse `[IPv6]` and `[IPv6]:port`, saying what to write: URLs bracket IPv6 addresses, this key does not."""
    bracketed = _BRACKETED.match(host)
    if bracketed is None:
        return
    try:
        address = str(ipaddress.IPv6Address(bracketed["address"]))
    except ValueError:
        return
    port = f" and give the port ({bracketed['port']}) as main_process_port" if bracketed["port"] else ""
    raise SettingsError(
        f"{path} takes an IPv6 address without brackets (got {host!r}): write {address!r}{port}", key=path
    )


def check_queueable(distributed: Mapping[str, Any]) -> None:
    """A queued run trains on the machine of the one worker that claims it: refuse several machines up front."""
    machines = int(distributed.get("num_machines", 1))
    if machines > 1:
        raise SettingsError(
            f"{DISTRIBUTED}.num_machines must be 1 for a queued run (got {machines}): {ONE_MACHINE}",
            key=f"{DISTRIBUTED}.num_machines",
        )


def processes_per_machine(distributed: Mapping[str, Any]) -> int:
    """The processes a run starts on each machine (one GPU each where there are GPUs); 1 for `{}`."""
    return max(1, int(distributed.get("num_processes", 1)) // max(1, int(distributed.get("num_machines", 1))))
