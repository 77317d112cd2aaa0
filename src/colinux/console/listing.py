"""``colinux list --json``: one JSON document of the running guests, for scripts.

Built from each daemon's ``status`` reply. Its keys are colinux's interface,
documented in the README (``SCHEMA`` is their version): keys may be added,
none is renamed or changes meaning without a new ``schema`` number::

    {"schema": 1, "guests": [{"name": "web", "state": "running", ...}]}
"""

from __future__ import annotations

from collections.abc import Iterable

SCHEMA = 1


def guest_entry(status: dict[str, object], now: float) -> dict[str, object]:
    """One guest's entry, from its daemon's status reply."""
    machine = status.get("machine")
    machine = machine if isinstance(machine, dict) else {}
    resident = status.get("resident_kib")
    started = status.get("started")
    exec_info = status.get("exec")
    exec_info = exec_info if isinstance(exec_info, dict) else {}
    return {
        "name": status.get("name"),
        "state": status.get("state"),
        "pid": status.get("pid"),
        "engine_pid": status.get("engine_pid"),
        "memory_mb": status.get("memory_mb"),
        "resident_mb": round(resident / 1024, 1) if isinstance(resident, int) else None,
        "cpus": status.get("cpus", machine.get("cpus")),
        "uptime_seconds": round(now - started, 1) if isinstance(started, int | float) else None,
        "started": started,
        "source": status.get("source"),
        "kernel": status.get("kernel"),
        "userspace": machine.get("userspace"),
        "agent": status.get("agent_version"),
        "exec": bool(exec_info.get("agent")),
        "exec_sessions": exec_info.get("sessions", 0),
        "serials": status.get("serials", []),
        "shares": machine.get("shares", []),
        "cards": machine.get("cards", []),
        "disks": machine.get("disks", []),
        "daemon_version": status.get("version"),
    }


def guests_document(statuses: Iterable[dict[str, object]], now: float) -> dict[str, object]:
    entries = [guest_entry(s, now) for s in statuses]
    return {"schema": SCHEMA, "guests": sorted(entries, key=lambda e: str(e["name"]))}
