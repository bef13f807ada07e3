"""``hwbench fuzz``: damaged media against phast's promises, counted.

A campaign mutates the test-suite's generated clips (:mod:`phast.testing.corpus`, every codec and
container it makes) with :mod:`hwbench.mutate`, and for each mutated file::

    harness (this process)              reference child               editor child (per batch)
    mutate clip n ─► file n ─────────► PyAV, one thread,  ──hashes─┐  phast.open(file n)
                                        sequential decode          │  frame(i) / frame(i, deadline)
    compare EXACT hashes ◄──────────────────────────────────────────┴── outcome of each request

* The **editor child** is the editor: it opens each file of a batch with ``phast.open`` (one pool,
  one store directory per campaign) and asks for random frames, blocking and with deadlines. It
  reports every outcome as a JSON line: a typed phast error (by class), a degraded frame (PROXY,
  KEYFRAME, BLANK) or an EXACT frame with a hash of its pixels, and the pool's worker restarts.
  Running it as a child is what lets the harness see an editor crash (the child dies) and a hang
  (no line for ``file_timeout`` seconds: the harness kills it) and carry on with the next file.
* The **reference child** decodes the same file the way phast defines the truth for a damaged
  stream: a plain sequential decode from the first packet, single-threaded, a packet the decoder
  rejects is skipped (the decode goes on), a demuxing error ends the stream, then the decoder is
  flushed; frame ``k`` of that decode is display frame ``k``. It runs in its own process because
  FFmpeg on damaged input may itself crash or hang; frames it produced before that still count.
* An EXACT frame whose hash differs from the reference's frame ``i``, or whose frame ``i`` the
  reference never produced, is a **wrong exact** frame. Wrong exact frames, hangs, editor crashes
  and untyped errors are promise violations: their files are copied into ``--out`` with their
  recipe (clip, seed, number, mutations), so :func:`hwbench.mutate.mutate` rebuilds them.

Entry points: :func:`run_campaign` (JSON-ready report), :func:`format_report`; the children are
``python -m hwbench.fuzz reference|editor SPEC``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .mutate import MUTATORS, mutate

#: Deadlines the editor child draws from for each request (None: a blocking ``frame(i)``).
DEADLINES: tuple[float | None, ...] = (None, None, 0.010, 0.040, 0.250)


@dataclass
class FuzzConfig:
    """Knobs of one campaign."""

    budget_s: float = 60.0  #: stop starting batches after this many seconds
    seed: int = 1
    out: str | None = None  #: where files that broke a promise are copied
    work_dir: str | None = None  #: clips, mutated files, store (default: a temporary dir)
    clips: tuple[str, ...] = ()  #: corpus clip names (default: all)
    #: clip name -> how many times more often than the others it is mutated (default 1)
    weights: dict[str, int] = field(default_factory=dict)
    batch: int = 8  #: files per editor child
    frames: int = 8  #: requests per file
    file_timeout: float = 90.0  #: seconds per file before the harness calls it a hang
    hang_timeout: float = 3.0  #: phast's worker watchdog inside the editor child
    proxies_every: int = 4  #: every n-th file is opened with background proxy building
    keep_files: bool = False  #: keep every mutated file in the work dir
    progress: bool = True


@dataclass
class Counts:
    files: int = 0
    files_by_clip: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    open_failed_typed: Counter[str] = field(default_factory=Counter)
    frames_requested: int = 0
    typed_errors: Counter[str] = field(default_factory=Counter)
    untyped_errors: Counter[str] = field(default_factory=Counter)
    degraded: Counter[str] = field(default_factory=Counter)
    exact_checked: int = 0
    wrong_exact: int = 0
    wrong_index: int = 0
    worker_restarts: Counter[str] = field(default_factory=Counter)
    hangs: int = 0
    editor_crashes: int = 0
    reference_failures: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)


# -- the corpus and the mutated files ---------------------------------------------------------

def _corpus(cfg: FuzzConfig, work: Path) -> dict[str, Path]:
    from phast.testing import corpus

    names = cfg.clips or corpus.CLIP_NAMES
    return {name: corpus.make_clip(name, work / "clips") for name in names}


def _recipe(cfg: FuzzConfig, n: int, names: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng([cfg.seed, n, 7])
    return {"number": n, "seed": cfg.seed, "clip": names[n % len(names)],
            "other": names[int(rng.integers(0, len(names)))],
            "proxies": cfg.proxies_every > 0 and n % cfg.proxies_every == 0}


def weighted_names(clips: dict[str, Path], weights: dict[str, int]) -> list[str]:
    """The campaign's clip sequence (file ``n`` mutates entry ``n % len``): sorted names, each
    repeated by its weight, so a recipe depends only on the corpus and the weights."""
    unknown = set(weights) - set(clips)
    if unknown:
        raise ValueError(f"weights for clips not in the campaign: {sorted(unknown)}")
    return [name for name in sorted(clips) for _ in range(max(1, int(weights.get(name, 1))))]


def corpus_digest(clips: dict[str, Path]) -> str:
    """SHA-256 over the corpus clips' names and bytes: two campaigns with the same seed mutated
    the same files exactly when their digests agree."""
    h = hashlib.sha256()
    for name in sorted(clips):
        h.update(name.encode() + b"\0" + hashlib.sha256(clips[name].read_bytes()).digest())
    return h.hexdigest()[:16]


def build_file(recipe: dict[str, Any], clips: dict[str, Path], directory: Path) -> Path:
    """Write the mutated file a recipe describes into ``directory``; return its path."""
    source = clips[recipe["clip"]]
    data, applied = mutate(source.read_bytes(), clips[recipe["other"]].read_bytes(),
                           recipe["seed"], recipe["number"])
    recipe["mutations"] = applied
    path = directory / f"{recipe['number']:06d}-{recipe['clip']}{source.suffix}"
    path.write_bytes(data)
    recipe["path"] = str(path)
    return path


def frame_hash(array: np.ndarray) -> str:
    """Hash of a picture's shape and bytes (rgb24), shared by the editor and reference children."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


# -- children ---------------------------------------------------------------------------------

def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def reference_main(spec: dict[str, Any]) -> None:
    """Reference child: one ``{"file", "i", "h"}`` line per decoded frame, ``{"file", "end"}``."""
    import av

    av.logging.set_level(None)
    for f in spec["files"]:
        k = f["number"]
        _emit({"file": k, "start": True})
        count, error = 0, None
        try:
            for frame in _sequential_decode(f["path"]):
                _emit({"file": k, "i": count, "h": frame_hash(frame)})
                count += 1
        except Exception as e:  # the reference's own failure: what it produced still counts
            error = f"{type(e).__name__}: {e}"[:300]
        _emit({"file": k, "end": count, "error": error})


def _sequential_decode(path: str) -> Iterator[np.ndarray]:
    """The truth for a damaged file: single-threaded, from the first packet, rejected packets
    skipped, a demuxing error ends the stream, then the flush (see the module docstring)."""
    import av

    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        cc.thread_type = "SLICE"
        cc.thread_count = 1
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except (StopIteration, av.FFmpegError):
                break
            if not packet.size:
                continue
            try:
                frames = cc.decode(packet)
            except av.FFmpegError:
                continue
            for frame in frames:
                yield frame.to_ndarray(format="rgb24")
        with contextlib.suppress(av.FFmpegError):
            for frame in cc.decode(None):
                yield frame.to_ndarray(format="rgb24")


def editor_main(spec: dict[str, Any]) -> None:
    """Editor child: open each file with phast, request frames, report every outcome."""
    import phast

    pool = phast.WorkerPool(max_workers=2, config=phast.WorkerConfig(
        hang_timeout=spec["hang_timeout"], idle_timeout=2.0))
    seen: dict[int, int] = {}
    try:
        for f in spec["files"]:
            k = f["number"]
            _emit({"file": k, "start": True})
            _probe_file(f, spec, pool)
            restarts: Counter[str] = Counter()
            for role, worker in pool.roles():
                delta = worker.restarts - seen.get(id(worker), 0)
                seen[id(worker)] = worker.restarts
                if delta:
                    restarts[role] += delta
            _emit({"file": k, "done": True, "restarts": dict(restarts)})
    finally:
        pool.shutdown()


def _probe_file(f: dict[str, Any], spec: dict[str, Any], pool: Any) -> None:
    import phast

    k = f["number"]
    rng = np.random.default_rng([f["seed"], k, 11])
    try:
        clip = phast.open(f["path"], cache_dir=spec["cache_dir"], pool=pool,
                          proxies=f["proxies"])
    except phast.PhastError as e:
        _emit({"file": k, "open": type(e).__name__})
        return
    except Exception as e:
        _emit({"file": k, "open": type(e).__name__, "untyped": str(e)[:300]})
        return
    with clip:
        n = len(clip)
        _emit({"file": k, "open": "ok", "frames": n})
        for _ in range(spec["frames"]):
            i = int(rng.integers(0, n))
            deadline = DEADLINES[int(rng.integers(0, len(DEADLINES)))]
            record: dict[str, Any] = {"file": k, "i": i, "deadline": deadline}
            try:
                with clip.frame(i, deadline=deadline) as frame:
                    record["q"] = frame.quality.name
                    record["index"] = frame.index
                    if frame.quality is phast.Quality.EXACT:
                        record["h"] = frame_hash(frame.array)
            except phast.PhastError as e:
                record["error"] = type(e).__name__
            except Exception as e:
                record["error"] = type(e).__name__
                record["untyped"] = str(e)[:300]
            _emit(record)


def _main(argv: list[str]) -> int:
    role, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    {"reference": reference_main, "editor": editor_main}[role](spec)
    return 0


# -- the harness ------------------------------------------------------------------------------

@dataclass
class _Child:
    """A child run over a batch: the records of each file, and how each file ended."""

    records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    outcome: dict[int, str] = field(default_factory=dict)  # "done", "hang", "crash: ..."


def _run_child(role: str, files: list[dict[str, Any]], cfg: FuzzConfig, work: Path,
               extra: dict[str, Any]) -> _Child:
    """Run the ``role`` child over ``files``; a hang or crash ends that file, and a fresh child
    carries on with the next one."""
    result = _Child()
    todo = list(files)
    while todo:
        spec = {"files": todo, **extra}
        spec_path = work / f"{role}.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.Popen([sys.executable, "-m", "hwbench.fuzz", role, str(spec_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
        reader.start()
        current: int | None = None
        started = time.monotonic()
        finished: set[int] = set()
        while True:
            left = started + cfg.file_timeout - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.01)) if current is not None else \
                    lines.get(timeout=cfg.file_timeout * 2)
            except queue.Empty:
                line = "<timeout>"
            if line is None or line == "<timeout>":
                if line == "<timeout>":
                    proc.kill()
                code = proc.wait()
                if current is not None and current not in finished:
                    result.outcome[current] = ("hang" if line == "<timeout>"
                                               else f"crash: exit {code}")
                    finished.add(current)
                break
            rec = json.loads(line)
            k = rec["file"]
            if rec.get("start"):
                current, started = k, time.monotonic()
            elif rec.get("done") or "end" in rec:
                finished.add(k)
                result.outcome[k] = "done"
                current = None
            result.records.setdefault(k, []).append(rec)
        reader.join(timeout=5)
        todo = [f for f in todo if f["number"] not in finished]
        if todo and not finished:  # died before its first file: retrying would loop
            for f in todo:
                result.outcome[f["number"]] = f"crash: exit {proc.returncode} before the file"
            break
    return result


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            lines.put(line)
    lines.put(None)


def run_campaign(cfg: FuzzConfig) -> dict[str, Any]:
    """Run a campaign for ``cfg.budget_s`` seconds; returns a JSON-ready report."""
    t0 = time.monotonic()
    own_work = cfg.work_dir is None
    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="phast-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(cfg.out) if cfg.out else None
    counts = Counts()
    try:
        clips = _corpus(cfg, work)
        names = weighted_names(clips, cfg.weights)
        files_dir = work / "files"
        files_dir.mkdir(exist_ok=True)
        store = work / "store"  # one store per campaign, shared by its editor children
        shutil.rmtree(store, ignore_errors=True)
        t_start = time.monotonic()
        n = 0
        while time.monotonic() - t_start < cfg.budget_s:
            batch = [_recipe(cfg, n + j, names) for j in range(cfg.batch)]
            n += cfg.batch
            for r in batch:
                build_file(r, clips, files_dir)
            ref = _run_child("reference", batch, cfg, work, {})
            ed = _run_child("editor", batch, cfg, work, {
                "cache_dir": str(store), "frames": cfg.frames, "hang_timeout": cfg.hang_timeout})
            for r in batch:
                _account(counts, r, ref, ed, out)
                if not cfg.keep_files:
                    Path(r["path"]).unlink(missing_ok=True)
            if cfg.progress:
                print(_progress(counts, time.monotonic() - t_start), file=sys.stderr, flush=True)
        report = _report(cfg, counts, time.monotonic() - t0)
        report["corpus_digest"] = corpus_digest(clips)
        return report
    finally:
        if own_work and not cfg.keep_files:
            shutil.rmtree(work, ignore_errors=True)


def _account(c: Counts, recipe: dict[str, Any], ref: _Child, ed: _Child,
             out: Path | None) -> None:
    """Fold one file's outcomes into the counts; keep the file if it broke a promise."""
    k = recipe["number"]
    c.files += 1
    c.files_by_clip[recipe["clip"]] += 1
    c.mutations.update(recipe["mutations"])
    hashes = {rec["i"]: rec["h"] for rec in ref.records.get(k, []) if "h" in rec}
    ref_complete = ref.outcome.get(k) == "done"
    if not ref_complete:
        c.reference_failures += 1
    problems: list[str] = []
    for rec in ed.records.get(k, []):
        if "open" in rec:
            if rec["open"] == "ok":
                c.opened += 1
            elif "untyped" in rec:
                c.untyped_errors[rec["open"]] += 1
                problems.append(f"open raised untyped {rec['open']}: {rec['untyped']}")
            else:
                c.open_failed_typed[rec["open"]] += 1
        elif "i" in rec:
            c.frames_requested += 1
            i = rec["i"]
            if "untyped" in rec:
                c.untyped_errors[rec["error"]] += 1
                problems.append(f"frame {i} raised untyped {rec['error']}: {rec['untyped']}")
            elif "error" in rec:
                c.typed_errors[rec["error"]] += 1
            elif rec.get("index") != i:
                c.wrong_index += 1
                problems.append(f"frame {i} came back as index {rec.get('index')}")
            elif rec["q"] != "EXACT":
                c.degraded[rec["q"]] += 1
            else:
                c.exact_checked += 1
                if hashes.get(i) != rec["h"]:
                    c.wrong_exact += 1
                    why = "differs from" if i in hashes else "is missing in"
                    problems.append(f"EXACT frame {i} (deadline {rec['deadline']}) {why} the "
                                    f"reference ({len(hashes)} frames"
                                    f"{'' if ref_complete else ', reference incomplete'})")
        elif rec.get("done"):
            c.worker_restarts.update(rec.get("restarts") or {})
    outcome = ed.outcome.get(k, "crash: no outcome")
    if outcome == "hang":
        c.hangs += 1
        problems.append("hang: no answer within the per-file limit")
    elif outcome != "done":
        c.editor_crashes += 1
        problems.append(f"editor {outcome}")
    if problems:
        finding = {**{key: recipe[key] for key in ("number", "seed", "clip", "other",
                                                   "mutations", "proxies")},
                   "problems": problems[:10]}
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            src = Path(recipe["path"])
            shutil.copy(src, out / src.name)
            (out / (src.name + ".json")).write_text(json.dumps(finding, indent=2))
            finding["saved"] = str(out / src.name)
        c.findings.append(finding)


def _progress(c: Counts, elapsed: float) -> str:
    return (f"fuzz: {elapsed:6.1f} s  files {c.files}  opened {c.opened}  frames "
            f"{c.frames_requested}  exact checked {c.exact_checked}  wrong exact {c.wrong_exact}"
            f"  hangs {c.hangs}  editor crashes {c.editor_crashes}  "
            f"restarts {sum(c.worker_restarts.values())}")


def _report(cfg: FuzzConfig, c: Counts, elapsed: float) -> dict[str, Any]:
    # asdict() would turn a Counter into a Counter of (key, value) pairs: plain dicts here
    body = {f.name: dict(v) if isinstance(v, Counter) else v
            for f in fields(c) for v in [getattr(c, f.name)]}
    body["findings"] = c.findings[:50]
    return {"tool": "hwbench fuzz", "config": asdict(cfg), "elapsed_s": round(elapsed, 1),
            "mutators": list(MUTATORS), **body,
            "typed_error_total": sum(c.typed_errors.values()),
            "degraded_total": sum(c.degraded.values()),
            "worker_restarts_total": sum(c.worker_restarts.values()),
            "ok": (c.wrong_exact == 0 and c.hangs == 0 and c.editor_crashes == 0
                   and not c.untyped_errors and c.wrong_index == 0)}


def format_report(rep: dict[str, Any]) -> str:
    """A few lines of stdout summary."""

    def counter(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"

    return "\n".join([
        f"fuzz (seed {rep['config']['seed']}, {rep['elapsed_s']:g} s, corpus "
        f"{rep.get('corpus_digest', '?')}): {rep['files']} files from "
        f"{len(rep['files_by_clip'])} clips ({counter(rep['files_by_clip'])}); mutations: "
        f"{counter(rep['mutations'])}",
        f"opened {rep['opened']}, open failed (typed): {counter(rep['open_failed_typed'])}",
        f"frames requested {rep['frames_requested']}: typed errors "
        f"{counter(rep['typed_errors'])}; degraded {counter(rep['degraded'])}; "
        f"EXACT checked {rep['exact_checked']}",
        f"wrong EXACT {rep['wrong_exact']}, wrong index {rep['wrong_index']}, untyped errors "
        f"{counter(rep['untyped_errors'])}, hangs {rep['hangs']}, editor crashes "
        f"{rep['editor_crashes']}",
        f"worker crashes contained (restarts): {counter(rep['worker_restarts'])}; reference "
        f"decode failed on {rep['reference_failures']} files",
        "verdict: " + ("OK" if rep["ok"] else f"PROMISE BROKEN ({len(rep['findings'])} files)"),
    ])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
