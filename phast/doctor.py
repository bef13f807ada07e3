"""``phast doctor``: is the worker sandbox really on, on this host?

Spawns a real worker (as the editor would), reads the confinement report it sends with READY,
asks it to try a few forbidden things (:meth:`phast.worker.Server.op_selftest`), and compares
both with what the host offers (:func:`phast.sandbox.host_support`). A layer the host supports
that is not active in the worker is a failure, and so is a device node granted to the worker's
backends (GPU nodes, with the default configuration on a GPU host) that it cannot open
read-write and reach its driver through by ioctl.
"""

from __future__ import annotations

from typing import Any

from . import sandbox
from .supervisor import Process, WorkerConfig

#: Layers that need nothing from the host beyond Linux itself.
ALWAYS_SUPPORTED = ("no_new_privs", "rlimits", "environment")


def verdicts(host: dict[str, str], report: dict[str, str]) -> list[dict[str, Any]]:
    """One row per layer: the host's support, the worker's status, and whether that is a fault."""
    rows = []
    for layer in sandbox.LAYERS:
        support = host.get(layer, "supported") if layer not in ALWAYS_SUPPORTED else "supported"
        status = report.get(layer, "unavailable: not reported by the worker")
        supported = support.startswith("supported")
        active = status.startswith("active")
        rows.append({"layer": layer, "host": support, "worker": status,
                     "ok": active or not supported})
    return rows


def run(config: WorkerConfig | None = None) -> dict[str, Any]:
    """Spawn a worker, collect its report and self-test, and judge them (:func:`judge`)."""
    proc = Process(config or WorkerConfig())
    try:
        report = dict(proc.sandbox)
        reply, _ = proc.call({"op": "selftest"})
        checks = {str(k): str(v) for k, v in (reply.get("checks") or {}).items()}
    finally:
        proc.stop()
    return judge(sandbox.host_support(), report, checks)


def judge(host: dict[str, str], report: dict[str, str],
          checks: dict[str, str]) -> dict[str, Any]:
    """The verdict on one worker: its layers (:func:`verdicts`), attempts that got through a
    layer the host supports (``leaks``), and granted device nodes it could not use
    (``refused``); ``ok`` when there are none of either and every row is fine."""
    rows = verdicts(host, report)
    # An attempt that got through a layer the host supports is a failure too, whatever the
    # report says.
    leaks = [c for c, outcome in checks.items() if outcome.startswith("ALLOWED")
             and any(f"({layer})" in c and host.get(layer, "").startswith("supported")
                     for layer in host)]
    # The other way round: a device node the worker's backends were granted must be usable
    # (opened, an ioctl reaching the driver), or the GPU backend cannot work there. A node the
    # user's file permissions close ("not tried") is the host's setting, not the sandbox's.
    refused = [c for c, outcome in checks.items()
               if c.endswith("(device grant)") and outcome.startswith("denied")]
    return {"ok": all(r["ok"] for r in rows) and not leaks and not refused, "layers": rows,
            "checks": checks, "leaks": leaks, "refused": refused}
