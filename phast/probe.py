"""A backend's probe in a child interpreter: ``phast backends`` and the conformance suite.

The editor never imports a backend (its libraries may crash, hang or take seconds to load): each
probe runs in a fresh ``python -c`` with the editor's ``sys.path``, loads the class through
:func:`phast.registry.load` exactly as a worker would, and prints its :class:`ProbeResult` as
JSON. A crash, a hang (killed after a timeout with everything it started) or a failed load is an
unavailable backend with the reason, never an exception here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

#: Seconds one backend probe may take before it is reported unavailable.
DEFAULT_PROBE_TIMEOUT = 30.0

_PROBE_MARK = "PHAST-PROBE-RESULT:"

#: Run by ``python -c`` in a child interpreter: load one backend class as a worker does
#: (:func:`phast.registry.load`: a module that fails to import, or a class that is not a
#: ``Backend``, is unavailable) and print its probe. A load failure names its cause first.
_PROBE_SCRIPT = f"""
import json, sys
try:
    from phast.registry import load

    obj = load(sys.argv[1])
    result = obj.probe()
    out = {{"available": bool(getattr(result, "available", False)),
            "reason": str(getattr(result, "reason", "") or ""),
            "details": dict(getattr(result, "details", None) or {{}}),
            "codecs": sorted(getattr(obj, "codecs", None) or ())}}
except BaseException as e:
    cause = e.__cause__ if type(e).__name__ == "BackendUnavailable" and e.__cause__ else e
    why = f"{{type(cause).__name__}}: {{cause}}" + ("" if cause is e else f" ({{e}})")
    out = {{"available": False, "reason": why, "details": {{}}}}
sys.stdout.write("\\n{_PROBE_MARK}" + json.dumps(out, default=str) + "\\n")
sys.stdout.flush()
"""


def probe_backend(spec: str, timeout: float = DEFAULT_PROBE_TIMEOUT) -> dict[str, Any]:
    """Import backend ``spec`` in a child interpreter and return its probe as plain data.

    Never raises: an import error, a crash or a timeout is an unavailable backend with a reason.
    The child sees the same ``sys.path`` as this process.
    """
    import signal
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.exists(p))
    try:
        # Own session: a timed-out probe is killed with everything it started (no pipe held open).
        child = subprocess.Popen([sys.executable, "-c", _PROBE_SCRIPT, spec], env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, errors="replace",
                                 start_new_session=True)
    except OSError as e:
        return {"available": False, "reason": f"cannot start a probe process: {e}",
                "details": {}}
    with child:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.communicate(timeout=5)
            return {"available": False, "reason": f"probe timed out after {timeout:g} s",
                    "details": {}}
    for line in reversed(stdout.splitlines()):
        if line.startswith(_PROBE_MARK):
            try:
                result = json.loads(line[len(_PROBE_MARK):])
            except ValueError:
                break
            if isinstance(result, dict):
                codecs = result.get("codecs")
                return {"available": result.get("available") is True,
                        "reason": str(result.get("reason") or ""),
                        "codecs": [str(c) for c in codecs] if isinstance(codecs, list) else [],
                        "details": result.get("details") if isinstance(result.get("details"),
                                                                       dict) else {}}
            break
    from .supervisor import describe_exit

    tail = (stderr.strip().splitlines() or [""])[-1]
    reason = f"probe process failed ({describe_exit(child.returncode)})"
    return {"available": False, "reason": f"{reason}: {tail}" if tail else reason, "details": {}}


def list_backends(timeout: float = DEFAULT_PROBE_TIMEOUT,
                  probe: Callable[[str, float], dict[str, Any]] = probe_backend,
                  ) -> list[dict[str, Any]]:
    """Every registered backend with its origin and probe result, probed concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    from . import registry

    table = sorted(registry.available().items())
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(table)))) as ex:
        results = list(ex.map(lambda item: probe(item[1], timeout), table))
    return [
        {"name": name, "spec": spec,
         "origin": "built-in" if registry.BUILTIN.get(name) == spec else "plugin", **result}
        for (name, spec), result in zip(table, results, strict=True)
    ]


__all__ = ["DEFAULT_PROBE_TIMEOUT", "list_backends", "probe_backend"]
