"""A hostile backend attacks its sandbox from inside real workers: every attempt is refused by
the kernel or contained by the supervisor, the editor is untouched, and the next request, on a
fresh worker, is exact (pixels against the independent reference decode).

A denial is asserted only where the host supports the layer that refuses it
(:func:`phast.sandbox.host_support`); where the host supports it but the worker reports it
inactive, the test fails.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

import phast
from phast import registry, sandbox
from phast.cli import main as cli_main
from phast.doctor import verdicts
from tests.reference import reference_frames

CLIP = "h264_bpyramid_longgop"
HOST = sandbox.host_support()

#: (attack, the layer that must refuse it, the errno the worker sees)
DENIALS = [
    ("socket_inet", "seccomp", "EPERM"),
    ("socket_unix", "seccomp", "EPERM"),
    ("exec", "seccomp", "EPERM"),
    ("fork", "seccomp", "EPERM"),
    ("fork_bomb", "seccomp", "EPERM"),
    ("ptrace", "seccomp", "EPERM"),
    ("signal_parent", "seccomp", "EPERM"),
    ("write", "landlock", "EACCES"),
    ("read_secret", "landlock", "EACCES"),
    ("read_passwd", "landlock", "EACCES"),
]
#: (misbehaviour no layer refuses, what the supervisor's failure record may say)
CONTAINED = [
    # MemoryError at the address-space cap (exit 70), or the watchdog when zeroing 2 GiB on a
    # loaded machine outlasts it
    ("memory", ("exit code 70", "sent no")),
    ("spin", ("sent no",)),
    ("garbage_bytes", ("malformed record",)),
    ("huge_header", ("message too large",)),
    ("not_an_object", ("must be a JSON object",)),
    ("send_fd", ("sent file descriptors",)),
    ("wrong_index", ("",)),
    ("oversized", ("",)),
    ("out_of_slot", ("",)),
]


@pytest.fixture
def hostile() -> Iterator[str]:
    registry.register("hostile", "tests.hostile_backend:HostileBackend")
    yield "hostile"
    registry.unregister("hostile")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    p = tmp_path / "secret.txt"
    p.write_text("the editor's secret")
    return p


def require_layer(report: dict[str, str], layer: str) -> None:
    """Skip where the host lacks ``layer``; fail where it has it and the worker does not."""
    if not HOST[layer].startswith("supported"):
        pytest.skip(f"{layer} {HOST[layer]}")
    assert report[layer].startswith("active"), f"{layer} expected, worker says {report[layer]}"


def _target(attack: str, tmp_path: Path, secret: Path) -> str:
    return str(secret if attack == "read_secret" else tmp_path / "written-by-worker.txt")


def _workers_only() -> None:
    """The only children of the editor are workers: nothing an attack forked or exec'd."""
    for child in psutil.Process().children(recursive=True):
        assert "phast.worker" in " ".join(child.cmdline()), child


@pytest.mark.parametrize(("attack", "layer", "code"), DENIALS)
def test_attack_while_decoding_is_denied(attack, layer, code, make, cache_dir, pool, hostile,
                                         tmp_path, secret) -> None:
    ref = reference_frames(make(CLIP))
    target = _target(attack, tmp_path, secret)
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend=hostile,
                    backend_options={"attack": attack, "at": 30, "target": target}) as clip:
        assert np.array_equal(clip.frame(29).array, ref[29])
        require_layer(clip.sandbox, layer)  # before a fork bomb, not after
        first = clip.worker_pid
        f = clip.frame(30)  # the attack, a killed worker, the retry on a fresh one
        assert f.index == 30 and np.array_equal(f.array, ref[30])
        assert clip.worker_pid != first
        failure = pool.workers[0].last_failure or ""
        assert f"HostileOutcome: {attack} denied: {code}" in failure
        assert np.array_equal(clip.frame(31).array, ref[31])
        _workers_only()
    assert not (tmp_path / "written-by-worker.txt").exists()
    assert secret.read_text() == "the editor's secret"


@pytest.mark.parametrize(("attack", "layer", "code"),
                         [d for d in DENIALS if d[0] in ("socket_inet", "exec", "read_secret",
                                                          "write")])
def test_attack_while_opening_is_denied(attack, layer, code, make, cache_dir, pool, hostile,
                                        tmp_path, secret) -> None:
    if not HOST[layer].startswith("supported"):
        pytest.skip(f"{layer} {HOST[layer]}")
    target = _target(attack, tmp_path, secret)
    # Twice (the open is retried once on a fresh worker), then a typed error naming the outcome.
    with pytest.raises(phast.MediaError, match=f"died twice while opening it .*HostileOutcome: "
                                               f"{attack} denied: {code}"):
        phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend=hostile,
                   backend_options={"attack": attack, "at": -1, "target": target})
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool) as clip:
        assert np.array_equal(clip.frame(17).array, ref[17])
        require_layer(clip.sandbox, layer)
    assert not (tmp_path / "written-by-worker.txt").exists()


@pytest.mark.parametrize(("mode", "seen"), CONTAINED)
def test_misbehaviour_is_contained(mode, seen, make, cache_dir, pool, hostile) -> None:
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend=hostile,
                    backend_options={"attack": mode, "at": 40}) as clip:
        assert np.array_equal(clip.frame(39).array, ref[39])
        first = clip.worker_pid
        f = clip.frame(40)
        assert f.index == 40 and np.array_equal(f.array, ref[40])
        assert clip.worker_pid != first
        assert pool.workers[0].restarts == 1
        assert any(s in (pool.workers[0].last_failure or "") for s in seen)
        assert np.array_equal(clip.frame(41).array, ref[41])
        _workers_only()


def test_threads_still_work_under_the_filter(make, cache_dir, pool, hostile) -> None:
    """clone3 fails with ENOSYS and glibc falls back to clone(CLONE_THREAD): threads run, and
    the decoder's frame threads (already started by frame 9) are there."""
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend=hostile,
                    backend_options={"attack": "threads", "at": 10}) as clip:
        assert np.array_equal(clip.frame(9).array, ref[9])
        require_layer(clip.sandbox, "seccomp")
        assert np.array_equal(clip.frame(10).array, ref[10])
        failure = pool.workers[0].last_failure or ""
        assert "threads work: python thread ran=True" in failure
        tasks = int(failure.rsplit("tasks=", 1)[1].split()[0])
        assert tasks > 2  # the main thread and the decoder's frame threads (the Python one ended)


def test_landlock_alone_denies_tcp_and_signals(tmp_path: Path) -> None:
    """The network and signal scopes of the ruleset, without seccomp in front of them."""
    if not HOST["landlock"].startswith("supported: ABI"):
        pytest.skip(HOST["landlock"])
    abi = int(HOST["landlock"].rsplit(" ", 1)[1])
    if abi < 6:
        pytest.skip(f"Landlock ABI {abi} has no network rights or scopes")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    code = (
        "import os, socket, sys\n"
        "from phast import landlock\n"
        "landlock.restrict(landlock.library_paths())\n"
        "out = []\n"
        f"s = socket.socket()\n"
        f"try:\n    s.connect(('127.0.0.1', {port})); out.append('connect ALLOWED')\n"
        "except OSError as e: out.append(f'connect {e.errno}')\n"
        "try:\n    socket.socket().bind(('127.0.0.1', 0)); out.append('bind ALLOWED')\n"
        "except OSError as e: out.append(f'bind {e.errno}')\n"
        "try:\n    os.kill(os.getppid(), 0); out.append('signal ALLOWED')\n"
        "except OSError as e: out.append(f'signal {e.errno}')\n"
        "print(' '.join(out))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=True, cwd=Path(__file__).resolve().parent.parent)
    finally:
        listener.close()
    assert done.stdout.split() == ["connect", "13", "bind", "13", "signal", "1"], done.stdout


def test_doctor_reports_every_layer(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli_main(["doctor", "--json"])
    result = json.loads(capsys.readouterr().out)
    layers = {row["layer"]: row for row in result["layers"]}
    assert set(layers) == set(sandbox.LAYERS)
    for name in ("landlock", "seccomp"):
        if HOST[name].startswith("supported"):
            assert layers[name]["worker"].startswith("active"), layers[name]
        else:
            assert layers[name]["worker"].startswith("unavailable: "), layers[name]
    assert result["ok"] and status == 0
    for check, outcome in result["checks"].items():
        layer = check.rsplit("(", 1)[1].rstrip(")")
        if HOST[layer].startswith("supported"):
            assert outcome.startswith("denied: "), (check, outcome)


def test_doctor_fails_when_a_supported_layer_is_missing() -> None:
    host = {"landlock": "supported: ABI 7", "seccomp": "unsupported: no libseccomp"}
    report = {layer: "active" for layer in sandbox.LAYERS}
    report["seccomp"] = "unavailable: libseccomp cannot be loaded"
    assert all(r["ok"] for r in verdicts(host, report))  # missing where unsupported: fine
    report["landlock"] = "unavailable: failed to apply (Invalid argument)"
    rows = {r["layer"]: r["ok"] for r in verdicts(host, report)}
    assert rows == {"no_new_privs": True, "rlimits": True, "environment": True,
                    "landlock": False, "seccomp": True}



# -- device nodes: what GPU backends are granted, and nothing else ------------------------------

DEVICE_SPEC = "tests.hostile_backend:DeviceHostileBackend"
ABI = int(HOST["landlock"].rsplit(" ", 1)[1]) if HOST["landlock"].startswith("supported") else 0

#: (attack, device node, what the worker's attempt must give). /dev/full is the backend's own
#: node (as /dev/nvidia* are NVDEC's); /dev/random is granted to nobody; /dev/null is readable
#: by every worker (a library path) but neither writable nor open to device ioctls.
DEVICE_CASES = [
    ("open_device", "/dev/full", "ALLOWED: opened /dev/full read-write"),
    ("ioctl_device", "/dev/full", "ALLOWED: reached the driver (ENOTTY)"),
    ("open_device", "/dev/random", "denied: EACCES"),
    ("ioctl_device", "/dev/random", "denied: EACCES"),
    ("open_device", "/dev/null", "denied: EACCES"),
    ("ioctl_device", "/dev/null", "denied: EACCES"),  # IOCTL_DEV is handled from ABI 5 on
]


@pytest.fixture
def device_pool() -> Iterator[phast.WorkerPool]:
    registry.register("hostile-dev", DEVICE_SPEC)
    p = phast.WorkerPool(max_workers=1, config=phast.WorkerConfig(
        hang_timeout=2.0, idle_timeout=1.0, memory_limit=2 << 30, backends=(DEVICE_SPEC,)))
    yield p
    p.shutdown()
    registry.unregister("hostile-dev")


@pytest.mark.parametrize(("attack", "node", "outcome"), DEVICE_CASES)
def test_a_backend_gets_its_device_nodes_and_no_other(attack, node, outcome, make, cache_dir,
                                                      device_pool) -> None:
    """A backend's declared node opens read-write and its ioctls reach the driver (ENOTTY:
    /dev/full is no terminal) -- not EACCES, which is what a GPU driver's ioctls would get
    without the device-ioctl right; any other node stays closed, read-only ones to ioctls."""
    if not HOST["landlock"].startswith("supported"):
        pytest.skip(HOST["landlock"])
    if attack == "ioctl_device" and node == "/dev/null" and ABI < 5:
        outcome = "ALLOWED: reached the driver (ENOTTY)"  # ABI 4 and older cannot refuse ioctls
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=device_pool, backend="hostile-dev",
                    backend_options={"attack": attack, "at": 30, "target": node}) as clip:
        rights = "rw+ioctl" if ABI >= 5 else "rw"
        assert f"devices {rights}: /dev/full" in clip.sandbox["landlock"], clip.sandbox
        assert np.array_equal(clip.frame(30).array, ref[30])  # the retry, on a fresh worker
        failure = device_pool.workers[0].last_failure or ""
        assert f"HostileOutcome: {attack} {outcome}" in failure, failure


def test_doctor_opens_the_granted_device_nodes() -> None:
    """``phast doctor`` for a pool whose backend declares a node: the worker opens it
    read-write and its ioctl reaches the driver; a refused grant fails the verdict."""
    from phast import doctor

    if not HOST["landlock"].startswith("supported"):
        pytest.skip(HOST["landlock"])
    result = doctor.run(phast.WorkerConfig(backends=(DEVICE_SPEC,)))
    layers = {row["layer"]: row["worker"] for row in result["layers"]}
    assert "/dev/full" in layers["landlock"]
    assert result["checks"]["open+ioctl /dev/full (device grant)"] == \
        "reached the driver (ENOTTY)"
    assert result["ok"] and result["refused"] == []
    report = {r["layer"]: r["worker"] for r in result["layers"]}
    closed = {**result["checks"], "open+ioctl /dev/nvidia-caps/nvidia-cap1 (device grant)":
              "not tried: its file mode lets this user not open it, sandbox or not"}
    assert doctor.judge(HOST, report, closed)["ok"]  # the host's permissions, not the sandbox
    refused = {**closed, "open+ioctl /dev/nvidiactl (device grant)": "denied: EACCES"}
    verdict = doctor.judge(HOST, report, refused)
    assert not verdict["ok"] and verdict["refused"] == ["open+ioctl /dev/nvidiactl (device grant)"]


def test_default_workers_have_no_device_node() -> None:
    """Without hardware backends to preload, a worker is granted no device node at all."""
    from phast import doctor

    result = doctor.run(phast.WorkerConfig(backends=()))
    assert not any(c.endswith("(device grant)") for c in result["checks"])
    assert "devices" not in next(r["worker"] for r in result["layers"]
                                 if r["layer"] == "landlock")


# -- memory: an address-space cap, or the editor's resident-memory watchdog ---------------------

UNBOUNDED_SPEC = "tests.memory_backend:UnboundedBackend"


@pytest.fixture
def unbounded() -> Iterator[str]:
    registry.register("unbounded", UNBOUNDED_SPEC)
    yield "unbounded"
    registry.unregister("unbounded")


def test_workers_are_capped_by_the_kernel_and_not_watched(make, cache_dir, pool) -> None:
    """A CPU worker's bound is its address-space cap, read back from /proc (not its word)."""
    from phast import supervisor

    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool) as clip:
        clip.frame(0)
        pid = clip.worker_pid
        assert pid is not None
        assert supervisor.address_space_cap(pid) == 2 << 30  # the pool fixture's memory_limit
        assert "as=2048MiB" in clip.sandbox["rlimits"]
        proc = pool.workers[0].proc
        assert proc is not None and not supervisor.memory_watch.watched(proc)


def test_an_uncapped_worker_is_killed_past_its_resident_bound(make, cache_dir,
                                                              unbounded) -> None:
    """A backend that declares ``address_space_limit = False`` (CUDA's case) runs in workers
    without RLIMIT_AS; touching memory past ``memory_limit`` gets the worker killed by the
    editor's watchdog, and the retry on a fresh worker is exact."""
    from phast import supervisor

    ref = reference_frames(make(CLIP))
    pool = phast.WorkerPool(max_workers=1, config=phast.WorkerConfig(
        hang_timeout=10.0, idle_timeout=1.0, memory_limit=512 << 20,
        backends=(UNBOUNDED_SPEC,)))
    try:
        with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend=unbounded,
                        backend_options={"at": 40}) as clip:
            assert np.array_equal(clip.frame(39).array, ref[39])
            first = clip.worker_pid
            assert first is not None
            assert supervisor.address_space_cap(first) is None  # the kernel caps nothing
            assert "as=unlimited" in clip.sandbox["rlimits"]
            assert "resident<=512MiB" in clip.sandbox["rlimits"]
            proc = pool.workers[0].proc
            assert proc is not None and supervisor.memory_watch.watched(proc)
            f = clip.frame(40)  # hoards until killed; retried on a fresh worker
            assert f.index == 40 and np.array_equal(f.array, ref[40])
            assert clip.worker_pid != first and pool.workers[0].restarts == 1
            failure = pool.workers[0].last_failure or ""
            assert "SIGKILL" in failure and "passed its bound of 512 MiB" in failure, failure
            assert np.array_equal(clip.frame(41).array, ref[41])
    finally:
        pool.shutdown()


def test_an_uncapped_backend_is_refused_in_a_capped_worker(make, cache_dir, pool,
                                                            unbounded) -> None:
    """Only workers that preload such a backend drop the cap: elsewhere it is refused."""
    with pytest.raises(phast.BackendUnavailable, match="address-space cap"):
        phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend=unbounded)
