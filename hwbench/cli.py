"""``hwbench`` command line: ``access``, ``torture``, ``compare``, ``report``, ``fuzz``,
``proxies``, ``farm``, ``kernels``, ``mlt`` and ``democlip`` subcommands.

Contract: :func:`main` returns a process exit status (0 success, 2 usage error, 1 failure).
Only argparse and the standard library are imported at module level, so ``hwbench --help``
(and every subcommand's ``--help``) works without importing PyAV, numpy or phast's workers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: ``hwbench compare``'s peers when --peers is not given (hwbench.compare.DEFAULT_PEERS; kept
#: here as text so that --help imports no numpy)
DEFAULT_PEERS = "phast,pyav-player,opencv-player,torchcodec"


def _size(text: str) -> tuple[int, int]:
    from .democlip import parse_size  # numpy only, no av

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _budget_arg(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("--budget is a share of TDP in (0, 1], or 'off'")
    return value


def _demo_dir(args: argparse.Namespace) -> str | None:
    """--demo-dir, else <--cache-dir>/demo, else democlip's default."""
    if args.demo_dir:
        return str(args.demo_dir)
    if getattr(args, "cache_dir", None):
        return str(Path(args.cache_dir) / "demo")
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwbench", description="phast benchmarks: exact random access against in-process "
        "PyAV, and a fixed-rate request runner with a CPU-time power estimate.")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", help="phast index store (parent of a fresh temporary "
                        "store for `access`); demo clips go to CACHE_DIR/demo unless --demo-dir")
    common.add_argument("--demo-dir", help="where demo clips are generated and reused")
    common.add_argument("--seed", type=int, default=1234, help="request sequence seed")
    common.add_argument("--threads", type=int, default=0,
                        help="decoder threads for phast's worker and the baseline (0 = auto)")
    common.add_argument("--workers", type=int, default=None,
                        help="phast worker pool size (default: phast's default)")
    common.add_argument("--json", metavar="PATH", help="also write the full result as JSON")
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")

    a = sub.add_parser("access", parents=[common], help="random/scrub/sequential access: phast "
                       "vs in-process PyAV (a player: decode forward within 64 frames, a small "
                       "cache), with memory, CPU and pixel checks")
    a.add_argument("files", nargs="*", metavar="FILE", help="clips (default: demo clips)")
    a.add_argument("--clips", default="1080p,720p",
                   help="demo clip kinds when no FILE is given (default 1080p,720p)")
    a.add_argument("--seconds", type=float, default=60.0, help="demo clip length (default 60)")
    a.add_argument("--random", type=_positive_int, default=100, help="random requests")
    a.add_argument("--scrub", type=_positive_int, default=200, help="scrub requests")
    a.add_argument("--sequential", type=_positive_int, default=300, help="sequential frames")
    a.add_argument("--baselines", default="pyav-player",
                   help="comma-separated PyAV peers run next to phast: pyav-player (default; "
                   "decode forward within 64 frames, 24-frame cache) and/or pyav-naive (a seek "
                   "to the keyframe on every request)")
    a.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    a.add_argument("--memory-clips", type=int, default=4, help="clips open in the memory probe")
    a.add_argument("--memory-touch", type=_positive_int, default=5,
                   help="random requests per clip before memory is measured")
    a.set_defaults(func=_cmd_access)

    t = sub.add_parser("torture", parents=[common], help="fixed-rate request schedule against "
                       "one clip: on-time fraction, latency, CPU share, power (measured or "
                       "estimated)")
    t.add_argument("file", nargs="?", metavar="FILE", help="clip (default: the 1080p demo clip)")
    t.add_argument("--backend", default="auto",
                   help="phast backend: auto (hardware first, the reasons for any skip are "
                   "recorded), software, nvdec, vaapi or a plugin's name")
    t.add_argument("--rate", type=float, default=30.0, help="requests per second (default 30)")
    t.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    t.add_argument("--pattern", default="mixed", choices=["random", "scrub", "play", "mixed"])
    t.add_argument("--meter", default="auto", choices=["auto", "rapl", "nvml", "cpu"],
                   help="power meter: RAPL, NVML, both, else the CPU-time model (default auto)")
    t.add_argument("--tdp", type=float, default=None,
                   help="TDP in W (else $PHAST_TDP_W, else RAPL PL1 [+ GPU limits], else 15 W)")
    t.add_argument("--baseline-s", type=float, default=2.0,
                   help="seconds of idle baseline before the run; the budget counts power above "
                   "it (default 2; 0 = none)")
    t.add_argument("--budget", type=_budget_arg, default=0.10,
                   help="share of TDP phast's governor may use (default 0.10; 'off': ungoverned)")
    t.add_argument("--max-inflight", type=int, default=1,
                   help="requests out at once; a tick finding all busy is skipped (default 1)")
    t.add_argument("--drain", type=float, default=10.0,
                   help="seconds to wait for in-flight requests after the schedule ends")
    t.add_argument("--deadline", type=float, default=None,
                   help="seconds each request may take (default: one period)")
    t.add_argument("--exact", action="store_true",
                   help="blocking EXACT requests, no deadline (phast's tiers off)")
    t.add_argument("--no-proxies", action="store_true",
                   help="no background proxy building during the run")
    t.add_argument("--compare-pyav", nargs="?", const="player", default=None,
                   choices=["player", "naive"],
                   help="then run in-process PyAV on the same schedule: the player (decode "
                   "forward within 64 frames, a small cache; the default) or the naive peer "
                   "(a seek on every request)")
    t.add_argument("--clip", default="1080p", help="demo clip kind when no FILE is given")
    t.add_argument("--seconds", type=float, default=60.0, help="demo clip length (default 60)")
    t.add_argument("--shared-store", metavar="URL", default=None,
                   help="a shared proxy store behind the fresh local one (phast[farm])")
    t.add_argument("--chaos", type=float, default=0.0, metavar="N",
                   help="SIGKILL/SIGSTOP a random worker N times a minute (hwbench.chaos)")
    t.add_argument("--verify", action="store_true",
                   help="check sampled EXACT frames against a sequential decode afterwards")
    t.set_defaults(func=_cmd_torture)

    z = sub.add_parser("fuzz", help="mutated clips of every codec against phast: typed errors, "
                       "degraded or checked EXACT frames; no hang, no crash, no wrong frame")
    z.add_argument("--budget-s", type=float, default=60.0, help="seconds (default 60)")
    z.add_argument("--seed", type=int, default=1, help="campaign seed (default 1)")
    z.add_argument("--out", help="directory for files that broke a promise (with recipes)")
    z.add_argument("--json", metavar="PATH", help="also write the full result as JSON")
    z.add_argument("--work-dir", help="clips and mutated files (default: a temporary dir)")
    z.add_argument("--clips", default="", help="comma-separated corpus clips (default: all)")
    z.add_argument("--weight", action="append", default=[], metavar="CLIP=N",
                   help="mutate CLIP N times as often as the others (repeatable)")
    z.add_argument("--file-timeout", type=float, default=90.0,
                   help="seconds per file before it counts as a hang (default 90)")
    z.add_argument("--quiet", action="store_true", help="no progress on stderr")
    z.set_defaults(func=_cmd_fuzz)

    c = sub.add_parser("compare", parents=[common], help="torture's schedule against phast, "
                       "PyAV, OpenCV and torchcodec in turn, every returned frame checked")
    c.add_argument("file", nargs="?", metavar="FILE", help="clip (default: the 1080p demo clip)")
    c.add_argument("--rate", type=float, default=30.0, help="requests per second (default 30)")
    c.add_argument("--duration", type=float, default=60.0, help="seconds per peer (default 60)")
    c.add_argument("--pattern", default="mixed", choices=["random", "scrub", "play", "mixed"])
    c.add_argument("--peers", default=DEFAULT_PEERS,
                   help=f"comma-separated, run in this order (default {DEFAULT_PEERS}; also "
                   "pyav-naive and opencv-naive, which seek on every request); peers not "
                   "installed are skipped")
    c.add_argument("--tdp", type=float, default=None, help="as for torture")
    c.add_argument("--budget", type=_budget_arg, default=0.10, help="as for torture")
    c.add_argument("--deadline", type=float, default=None,
                   help="seconds each phast request may take (default: one period)")
    c.add_argument("--no-proxies", action="store_true", help="phast builds no proxies")
    c.add_argument("--verify-every", type=int, default=1,
                   help="check the frame of every N-th request (default 1: all)")
    c.add_argument("--clip", default="1080p", help="demo clip kind when no FILE is given")
    c.add_argument("--seconds", type=float, default=60.0, help="demo clip length (default 60)")
    c.set_defaults(func=_cmd_compare)

    r = sub.add_parser("report", help="PNG plots and report.md from a torture or compare JSON")
    r.add_argument("run", metavar="RUN.json", help="written by torture --json or compare --json")
    r.add_argument("--out", default=None, help="output directory (default: RUN-report/)")
    r.set_defaults(func=_cmd_report)

    d = sub.add_parser("democlip", help="generate (once) and print the path of a demo clip")
    d.add_argument("kind", nargs="?", default="1080p", help="1080p or 720p (default 1080p)")
    x = sub.add_parser("proxies", parents=[common], help="proxy tier: build throughput, bytes "
                       "per minute, hit latency (or --sweep the spec candidates)")
    x.add_argument("file", nargs="?", metavar="FILE", help="clip (default: the 1080p demo clip)")
    x.add_argument("--height", type=int, default=360, help="proxy height (default 360)")
    x.add_argument("--hits", type=_positive_int, default=300, help="proxy reads timed")
    x.add_argument("--sweep", action="store_true",
                   help="compare proxy sizes and JPEG quantisers instead")
    x.add_argument("--psnr", type=int, default=0, metavar="N",
                   help="PSNR of N stored proxies against exact-then-downscale")
    x.add_argument("--no-shortcuts", action="store_true",
                   help="build from exactly decoded frames (no proxy-only decoder settings)")
    x.add_argument("--clip", default="1080p", help="demo clip kind when no FILE is given")
    x.set_defaults(func=_cmd_proxies)
    f = sub.add_parser("farm", help="proxy farm: proxies/s against Dask workers, then torture "
                       "warm from the shared store only (needs phast[farm])")
    f.add_argument("file", nargs="?", metavar="FILE", help="clip (default: the 1080p demo clip)")
    f.add_argument("--workers", default="1,2", help="Dask worker counts (default 1,2)")
    f.add_argument("--repeat", type=_positive_int, default=2, help="builds per count (best "
                   "counts; default 2)")
    f.add_argument("--chunk", type=_positive_int, default=None,
                   help="frames per task, at least (whole groups of pictures; default "
                        "phast.farm.DEFAULT_CHUNK)")
    f.add_argument("--torture-s", type=float, default=20.0,
                   help="seconds of torture warm from the share (0: none; default 20)")
    f.add_argument("--rate", type=float, default=30.0, help="torture requests per second")
    f.add_argument("--pattern", default="mixed", choices=["random", "scrub", "play", "mixed"])
    f.add_argument("--budget", type=_budget_arg, default=0.10, help="as for torture")
    f.add_argument("--clip", default="1080p", help="demo clip kind when no FILE is given")
    f.add_argument("--seconds", type=float, default=60.0, help="demo clip length (default 60)")
    f.add_argument("--demo-dir", help="where demo clips are generated and reused")
    f.add_argument("--seed", type=int, default=1234, help="torture request sequence seed")
    f.add_argument("--json", metavar="PATH", help="also write the full result as JSON")
    f.add_argument("--quiet", action="store_true", help="no progress on stderr")
    f.set_defaults(func=_cmd_farm)
    m = sub.add_parser("mlt", help="MLT realtime playback and seeking: the phast producer vs "
                       "MLT's avformat producer (late, dropped, wrong frames, CPU)")
    m.add_argument("--seconds", type=float, default=20.0, help="clip length (default 20)")
    m.add_argument("--size", type=_size, default=(1280, 720), help="clip size (default 1280x720)")
    m.add_argument("--workdir", type=Path, default=None,
                   help="clips and profiles (default ~/.cache/phast/mltbench)")
    m.add_argument("--json", type=Path, default=None, help="write the results here too")
    m.set_defaults(func=_cmd_mlt)

    k = sub.add_parser("kernels", help="device kernels (OpenCL, CUDA) vs the NumPy reference "
                       "and swscale: 1080p NV12 → rgb24 and → 360p proxy")
    k.add_argument("--repeat", type=int, default=5, help="timed runs per case (best is shown)")
    k.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    k.set_defaults(func=_cmd_kernels)
    d.add_argument("--seconds", type=float, default=None, help="length override (own file)")
    d.add_argument("--size", type=_size, default=None, help="picture size override, WxH")
    d.add_argument("--dir", dest="demo_dir", default=None, help="output directory")
    d.add_argument("--open-gop", action="store_true",
                   help="non-IDR I-frames with leading B-frames (x264 open-gop; own file)")
    d.add_argument("--quiet", action="store_true", help="no progress on stderr")
    d.set_defaults(func=_cmd_democlip)
    return parser


def _cmd_access(args: argparse.Namespace) -> int:
    from . import access
    from .democlip import demo_clip

    if args.cache_dir:
        Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    cfg = access.AccessConfig(
        seed=args.seed, random=args.random, scrub=args.scrub, sequential=args.sequential,
        baselines=tuple(b.strip() for b in args.baselines.split(",") if b.strip()),
        cache_dir=args.cache_dir, workers=args.workers, threads=args.threads,
        memory=not args.no_memory, memory_clips=max(1, args.memory_clips),
        memory_touch=args.memory_touch, progress=not args.quiet)
    files = list(args.files)
    if not files:
        kinds = [k.strip() for k in args.clips.split(",") if k.strip()]
        files = [str(demo_clip(k, _demo_dir(args), seconds=args.seconds,
                               progress=not args.quiet)) for k in kinds]
    for f in files:
        if not Path(f).is_file():
            print(f"hwbench access: no such file: {f}", file=sys.stderr)
            return 2
    result = access.run(files, cfg)
    print(access.format_table(result))
    if args.json:
        access.write_json(result, args.json)
    return 0


def _cmd_torture(args: argparse.Namespace) -> int:
    from . import torture
    from .democlip import demo_clip

    path = args.file or str(demo_clip(args.clip, _demo_dir(args),
                                      seconds=args.seconds, progress=not args.quiet))
    if not Path(path).is_file():
        print(f"hwbench torture: no such file: {path}", file=sys.stderr)
        return 2
    cfg = torture.TortureConfig(
        rate=args.rate, duration=args.duration, pattern=args.pattern, seed=args.seed,
        tdp=args.tdp, meter=args.meter, baseline_s=args.baseline_s, budget=args.budget,
        cache_dir=args.cache_dir, threads=args.threads, backend=args.backend,
        workers=args.workers, max_inflight=args.max_inflight, drain_s=args.drain,
        progress=not args.quiet, deadline=args.deadline, exact=args.exact,
        proxies=not args.no_proxies, chaos=args.chaos, verify=args.verify,
        shared_store=args.shared_store)
    report = torture.run_torture(path, cfg)
    print(torture.format_report(report))
    if args.compare_pyav:
        import dataclasses

        name = f"pyav-{args.compare_pyav}"
        peer = torture.run_torture(path, dataclasses.replace(cfg, system=name))
        print()
        print(torture.format_report(peer))
        report["peers"] = {name: {k: v for k, v in peer.items() if k != "request_log"}}
    if args.json:
        torture.write_json(report, args.json)
    return 0


def _cmd_fuzz(args: argparse.Namespace) -> int:
    from . import fuzz

    cfg = fuzz.FuzzConfig(
        budget_s=args.budget_s, seed=args.seed, out=args.out, work_dir=args.work_dir,
        clips=tuple(c.strip() for c in args.clips.split(",") if c.strip()),
        weights=_weights(args.weight), file_timeout=args.file_timeout, progress=not args.quiet)
    report = fuzz.run_campaign(cfg)
    print(fuzz.format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1

def _weights(items: list[str]) -> dict[str, int]:
    weights = {}
    for item in items:
        name, _, n = item.partition("=")
        if not name or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"hwbench fuzz: --weight wants CLIP=N with N >= 1, not {item!r}")
        weights[name.strip()] = int(n)
    return weights


def _clip_path(args: argparse.Namespace) -> str:
    """FILE, else the demo clip (generated once), as torture picks it."""
    from .democlip import demo_clip

    return args.file or str(demo_clip(args.clip, _demo_dir(args), seconds=args.seconds,
                                      progress=not args.quiet))


def _cmd_compare(args: argparse.Namespace) -> int:
    from . import compare, torture

    path = _clip_path(args)
    if not Path(path).is_file():
        print(f"hwbench compare: no such file: {path}", file=sys.stderr)
        return 2
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in compare.PEERS]
    if unknown or not peers:
        renamed = "".join(f"; {p} is now {compare.RENAMED[p]}" for p in unknown
                          if p in compare.RENAMED)
        print(f"hwbench compare: unknown peer(s) {', '.join(unknown) or '(none given)'}"
              f"{renamed}; known: {', '.join(compare.PEERS)}", file=sys.stderr)
        return 2
    cfg = torture.TortureConfig(
        rate=args.rate, duration=args.duration, pattern=args.pattern, seed=args.seed,
        tdp=args.tdp, budget=args.budget, cache_dir=args.cache_dir, threads=args.threads,
        workers=args.workers, progress=not args.quiet, deadline=args.deadline,
        proxies=not args.no_proxies)
    report = compare.run_compare(path, cfg, peers, verify_every=args.verify_every)
    if args.json:  # first: a long run's figures must survive a failure to print them
        compare.write_json(report, args.json)
    print(compare.format_table(report))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from . import report

    run = Path(args.run)
    if not run.is_file():
        print(f"hwbench report: no such file: {run}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run.with_name(run.stem + "-report")
    try:
        written = report.make_report(run, out)
    except ImportError as e:
        print(f"hwbench report: {e}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


def _cmd_proxies(args: argparse.Namespace) -> int:
    from . import proxies
    from .democlip import demo_clip

    path = args.file or str(demo_clip(args.clip, _demo_dir(args), progress=not args.quiet))
    if args.sweep:
        rows = proxies.sweep(path)
        print(proxies.format_sweep(rows))
        result: Any = {"sweep": rows}
    else:
        result = proxies.run(path, height=args.height, hits=args.hits, seed=args.seed,
                             progress=not args.quiet, shortcuts=not args.no_shortcuts,
                             psnr_frames=args.psnr)
        print(proxies.format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_farm(args: argparse.Namespace) -> int:
    from . import farm
    from .democlip import demo_clip

    path = args.file or str(demo_clip(args.clip, _demo_dir(args), seconds=args.seconds,
                                      progress=not args.quiet))
    try:
        workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
    except ValueError:
        workers = ()
    if not workers or min(workers) < 1:
        print("hwbench farm: --workers is a list of counts >= 1, e.g. 1,2", file=sys.stderr)
        return 2
    cfg = farm.FarmConfig(workers=workers, repeat=max(1, args.repeat), chunk=args.chunk,
                          torture_s=args.torture_s, rate=args.rate, pattern=args.pattern,
                          budget=args.budget, seed=args.seed, progress=not args.quiet)
    out = farm.run(path, cfg)
    print(farm.format_result(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


def _cmd_kernels(args: argparse.Namespace) -> int:
    from . import kernels

    rows = kernels.run(repeat=max(1, args.repeat))
    print(kernels.format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _cmd_mlt(args: argparse.Namespace) -> int:
    import dataclasses

    from . import mlt

    workdir = args.workdir or Path.home() / ".cache" / "phast" / "mltbench"
    results = mlt.bench(workdir, seconds=args.seconds, size=args.size)
    print(mlt.table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in results],
                                              indent=2))
    return 0


def _cmd_democlip(args: argparse.Namespace) -> int:
    from .democlip import demo_clip

    print(demo_clip(args.kind, args.demo_dir, seconds=args.seconds, size=args.size,
                    open_gop=args.open_gop, progress=not args.quiet))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hwbench`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: Any = args.func(args)
    except ValueError as e:
        print(f"hwbench {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from phast.errors import PhastError  # imported late: hwbench starts without av

        if not isinstance(e, PhastError):
            raise
        print(f"hwbench {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
