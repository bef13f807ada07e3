"""Chaos under load: workers killed and stopped during a torture run; every answer at its
deadline (no request waits for a dead or stopped worker), no wrong EXACT frame, nothing left
behind."""

from __future__ import annotations

import tempfile

from hwbench import torture


def test_torture_survives_kills_and_stops(make) -> None:
    path = make("h264_bpyramid_longgop")
    # Ungoverned: every worker restart charges its start-up to the clip, so under a budget
    # how many exact decodes are admitted (the sample the verifier checks) depends on which
    # workers the faults hit. The governor under chaos is measured by the benchmark run.
    cfg = torture.TortureConfig(rate=30, duration=12, pattern="mixed", chaos=60, verify=True,
                                seed=7, cache_dir=tempfile.mkdtemp(), budget=None,
                                progress=False)
    rep = torture.run_torture(str(path), cfg)
    chaos = rep["chaos"]
    assert chaos["count"] >= 4, chaos
    assert {e["kind"] for e in chaos["events"]} <= {"kill", "stop", "stop-left"}
    assert all(e["role"] in ("decode", "image", "build") and e["pid"] > 0
               for e in chaos["events"])
    assert chaos["exact_checked"] > 20
    assert chaos["wrong_exact"] == 0, chaos["wrong_exact_indices"]
    assert chaos["leaked_processes"] == [] and chaos["leaked_shm"] == []
    assert chaos["leaked_memfd_fds"] == 0 and chaos["leaked_memfd_maps"] == 0
    assert chaos["clean"]
    assert rep["failed"] == 0, rep["errors"]
    assert rep["completed"] == rep["requests"]
    # Every answer at its deadline: a request that waited for a killed or stopped worker would
    # be late by the watchdog's seconds (phast.WorkerConfig.hang_timeout, 10 s), so no answer
    # may be later than the scheduler of a loaded 2-core test machine explains (a few tens of
    # ms; 0.5 s is the bound). The on-time share itself is the benchmark's figure.
    assert rep["slack_ms"]["max"] < 500, rep["slack_ms"]
