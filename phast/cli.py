"""The ``phast`` command line: ``info``, ``frame``, ``backends``, ``proxy build``, ``cache``,
``power``, ``serve``.

``import phast.cli`` is light: numpy, PyAV and the worker machinery load only when a subcommand
needs them, and the CLI process itself never decodes (workers do) nor imports a backend (probes
run in a child interpreter).

Errors: every :class:`phast.PhastError` (and an unwritable output path) is reported as one line
``phast: error: <message>`` on stderr. The exit status is 2 for bad arguments and missing inputs
(as for argparse's own errors) and 1 for everything else (media errors, worker failures, I/O).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import (
    BackendNotFound,
    FrameOutOfRange,
    InvalidArgument,
    PhastError,
    SourceNotFound,
)
from .probe import DEFAULT_PROBE_TIMEOUT

if TYPE_CHECKING:
    from .clip import Clip

PROG = "phast"

#: Errors that mean "the command line was wrong" (exit status 2, like argparse's own errors).
USAGE_ERRORS: tuple[type[PhastError], ...] = (
    SourceNotFound,
    InvalidArgument,
    FrameOutOfRange,
    BackendNotFound,
)

#: Output formats ``phast frame`` can store in a PNG as they are (no conversion in the CLI).
PNG_FORMATS: tuple[str, ...] = ("rgb24", "rgba", "gray", "gray16le", "rgb48le")

class CommandError(Exception):
    """A failure outside phast itself (e.g. the output file), reported like a PhastError."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# -- formatting helpers ----------------------------------------------------------------------


def _ratio(value: Fraction) -> str:
    """A Fraction as ``"num/den"`` (always both parts, unlike ``str(Fraction(30))``)."""
    return f"{value.numerator}/{value.denominator}"


def _one_line(message: str) -> str:
    return " ".join(message.splitlines()) if message else ""


def info_dict(clip: Clip) -> dict[str, Any]:
    """Everything ``phast info`` reports, as JSON-ready plain data (Fractions as "num/den")."""
    info = clip.info
    kmin, kmean, kmax = info.keyframe_interval
    return {
        "path": info.path,
        "streams": [
            {"index": s.index, "type": s.type, "codec": s.codec, "width": s.width,
             "height": s.height, "pix_fmt": s.pix_fmt}
            for s in info.streams
        ],
        "stream": info.stream,
        "stream_index": info.stream_index,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "pix_fmt": info.pix_fmt,
        "bit_depth": info.bit_depth,
        "frame_count": info.frame_count,
        "duration": info.duration,
        "start_time": info.start_time,
        "average_rate": _ratio(info.average_rate),
        "is_vfr": info.is_vfr,
        "time_base": _ratio(info.time_base),
        "rotation": info.rotation,
        "keyframe_count": len(info.keyframes),
        "keyframe_interval": {"min": kmin, "mean": kmean, "max": kmax},
        "index_method": info.index_method,
        "timestamps": info.timestamps,
        "backend": clip.backend,
    }


def format_info(data: dict[str, Any]) -> str:
    """The human-readable ``phast info`` report of an :func:`info_dict`."""
    lines = [f"path: {data['path']}", "streams:"]
    for s in data["streams"]:
        row = f"  #{s['index']} {s['type']:<9} {s['codec']}"
        if s.get("width") and s.get("height"):
            row += f" {s['width']}x{s['height']}"
        if s.get("pix_fmt"):
            row += f" {s['pix_fmt']}"
        if s["index"] == data["stream_index"]:
            row += "  <- selected"
        lines.append(row)
    if not data["streams"]:
        lines.append("  (not reported by the backend)")
    rate = Fraction(data["average_rate"])
    ki = data["keyframe_interval"]
    fields = [
        ("codec", data["codec"]),
        ("size", f"{data['width']}x{data['height']}"),
        ("pix_fmt", data["pix_fmt"]),
        ("bit depth", data["bit_depth"]),
        ("frames", data["frame_count"]),
        ("duration", f"{data['duration']:.6f} s"),
        ("start time", f"{data['start_time']:.6f} s"),
        ("average rate", f"{data['average_rate']} ({float(rate):.6g} fps)"),
        ("VFR", "yes" if data["is_vfr"] else "no"),
        ("time base", data["time_base"]),
        ("rotation", f"{data['rotation']} degrees (metadata)"),
        ("keyframes", data["keyframe_count"]),
        ("keyframe interval", f"min {ki['min']}, mean {ki['mean']:.2f}, max {ki['max']} frames"),
        ("index method", data["index_method"]),
        ("timestamps", data["timestamps"]),
        ("backend", data["backend"]),
    ]
    lines.append(f"video stream {data['stream']}:")
    width = max(len(name) for name, _ in fields) + 1
    lines.extend(f"  {name + ':':<{width}} {value}" for name, value in fields)
    return "\n".join(lines)


# -- subcommands -----------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> Clip:
    from .clip import open as open_clip

    return open_clip(args.file, stream=args.stream, backend=args.backend,
                     cache_dir=args.cache_dir, proxies=False)


def cmd_info(args: argparse.Namespace) -> int:
    """``phast info``: describe the source and its selected video stream."""
    with _open(args) as clip:
        data = info_dict(clip)
    print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0


def cmd_frame(args: argparse.Namespace) -> int:
    """``phast frame``: decode one frame (by index or time) and write it as a PNG."""
    from .png import encode_png

    with _open(args) as clip:
        frame = clip.frame(args.index, format=args.format) if args.index is not None \
            else clip.frame_at(args.time, format=args.format)
        with frame:
            png = encode_png(frame.array)
            index, pts, time, quality = frame.index, frame.pts, frame.time, frame.quality
    try:
        with open(args.output, "wb") as f:
            f.write(png)
    except OSError as e:
        raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from e
    print(f"frame: {index}")
    print(f"pts: {pts}")
    print(f"time: {time!r}")  # full precision: --time with this value selects this frame
    print(f"quality: {quality}")
    print(f"output: {args.output}")
    return 0


def _status(entry: dict[str, Any]) -> str:
    if not entry["available"]:
        return f"unavailable: {_one_line(entry['reason']) or 'no reason given'}"
    details = ", ".join(f"{k} {v}" for k, v in entry["details"].items())
    return f"available ({details})" if details else "available"


def cmd_backends(args: argparse.Namespace) -> int:
    """``phast backends``: registered backends and whether each can run on this host."""
    from .probe import list_backends

    entries = list_backends(args.timeout)
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return 0
    if not entries:
        print("no backends registered")
        return 0
    rows = [("NAME", "AVAILABLE", "ORIGIN", "CODECS", "SPEC", "STATUS")]
    rows += [(e["name"], "yes" if e["available"] else "no", e["origin"],
              ",".join(e.get("codecs") or []) or "any", e["spec"], _status(e)) for e in entries]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True))
              + "  " + row[5])
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """``phast doctor``: each sandbox layer in a real worker, and whether this host supports it."""
    from . import doctor

    result = doctor.run()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["layers"]:
            mark = "ok  " if row["ok"] else "FAIL"
            print(f"{mark} {row['layer']:<13} {row['worker']}")
            if not row["host"].startswith("supported"):
                print(f"     {'':<13} host: {row['host']}")
        for check, outcome in result["checks"].items():
            print(f"     try {check}: {outcome}")
        if not result["ok"]:
            print("a layer this host supports is not active in the worker, an attempt got "
                  "through it, or a granted device node is refused", file=sys.stderr)
    return 0 if result["ok"] else 1


# -- argument parsing ------------------------------------------------------------------------


def cmd_power(args: argparse.Namespace) -> int:
    """``phast power``: the meter ``--meter`` picks, its zones/devices, the TDP, one reading."""
    from .power import discover_tdp, open_meter, read_power

    tdp = None if args.tdp is None else discover_tdp(args.tdp)
    meter = open_meter(args.meter, tdp=tdp)
    try:
        watts = read_power(meter, args.seconds)
        info = {**meter.describe(), "power_w": watts, "seconds": args.seconds}
    finally:
        meter.close()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"meter: {info['meter']} -- {info['meter_label']}")
    for z in info.get("zones") or info.get("rapl", {}).get("zones", []):
        print(f"  RAPL zone {z['zone']} ({z['name']}): {z['path']}")
    for d in info.get("devices") or info.get("nvml", {}).get("devices", []):
        print(f"  GPU {d['gpu']} {d['name']}: {d['energy']}, limit {d['power_limit_w']} W")
    for why in info.get("fallback", []):
        print(f"  not used: {why}")
    print(f"tdp: {info['tdp_w']:g} W [{info['tdp_source']}]")
    print(f"power: {watts:.2f} W over {args.seconds:g} s")
    return 0


def cmd_proxy_build(args: argparse.Namespace) -> int:
    """``phast proxy build``: build proxies of each FILE now, with a progress bar."""
    from .clip import open as open_clip

    if args.dask:
        from .farm import run_cli

        return run_cli(args, _ProgressBar("farm", enabled=not args.quiet))
    for path in args.files:
        with open_clip(path, cache_dir=args.cache_dir, proxies=False,
                       proxy_height=args.height, shared_store=args.shared_store,
                       publish=bool(args.shared_store)) as clip:
            label = os.path.basename(path)
            bar = _ProgressBar(label, enabled=not args.quiet)
            built, failed = clip.build_proxies(full=args.full, progress=bar)
            bar.finish()
            what = "all frames" if args.full else "keyframes"
            print(f"{label}: {built} proxies built ({what}, {args.height} rows), "
                  f"{failed} frames failed, {len(clip)} frames in the clip")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``phast serve``: serve clients over a Unix socket (docs/protocol.md)."""
    from . import serve

    if args.fd is not None and args.socket is not None:
        raise CommandError("--fd and --socket exclude each other", 2)
    try:
        return serve.main(args.fd, args.socket, args.cache_dir, args.idle_exit)
    except OSError as e:  # a socket path that is taken, a folder that is not private
        raise CommandError(f"cannot serve: {e}") from e


def cmd_cache_stats(args: argparse.Namespace) -> int:
    """``phast cache stats``: size, entries, clips, and the hit rate of the store's lookups
    (diskcache's own statistics: every lookup by every process since the store was cleared);
    with a shared level, its size and this cache's hits on it."""
    from .sharedstore import open_shared
    from .store import Store

    shared = open_shared(args.shared_store)
    if shared is None:
        store = Store(args.cache_dir)
    else:
        from .levels import LayeredStore

        store = LayeredStore(args.cache_dir, shared)
    try:
        stats = store.stats()
    finally:
        store.close()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    rate = "n/a" if stats["hit_rate"] is None else f"{stats['hit_rate']:.1%}"
    print(f"store:      {stats['directory']}\n"
          f"bytes:      {stats['bytes']:,} of {stats['size_limit']:,}\n"
          f"entries:    {stats['entries']} ({stats['proxies']} proxies, "
          f"{stats['indices']} frame indices)\n"
          f"clips:      {stats['clips']}\n"
          f"hit rate:   {rate} ({stats['hits']} hits, {stats['misses']} misses, of every "
          "lookup since the store was created or cleared)")
    sh = stats.get("shared")
    if sh is not None:
        rate = "n/a" if sh["hit_rate"] is None else f"{sh['hit_rate']:.1%}"
        print(f"shared:     {sh['url']}\n"
              f"  proxies:  {sh['proxies']} of {sh['sources']} sources, {sh['bytes']:,} bytes "
              "(from its manifests)\n"
              f"  hit rate: {rate} ({sh['hits']} hits, {sh['misses']} misses, of local misses)")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """``phast cache clear [FILE...]``: everything, or the entries of the given sources."""
    from .store import Store, source_identity

    store = Store(args.cache_dir)
    try:
        if not args.files:
            removed = store.clear()
        else:
            removed = 0
            for path in args.files:
                if not os.path.isfile(path):
                    raise SourceNotFound(f"no such file: {path}")
                removed += store.clear(source_identity(path))
    finally:
        store.close()
    print(f"removed {removed} entries")
    return 0


class _ProgressBar:
    """``label [#####     ] done/total`` on stderr, redrawn in place."""

    def __init__(self, label: str, *, enabled: bool = True, width: int = 30) -> None:
        self.label, self.enabled, self.width = label, enabled and sys.stderr.isatty(), width
        self.last = ""

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        filled = self.width * done // total
        line = f"\r{self.label} [{'#' * filled}{' ' * (self.width - filled)}] {done}/{total}"
        if line != self.last:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.last = line

    def finish(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the media file")
    p.add_argument("--stream", metavar="K", type=_non_negative_int, default=0,
                   help="video stream number (0 = first video stream; default 0)")
    p.add_argument("--backend", metavar="NAME", default="auto",
                   help="backend name (see 'phast backends'; default auto)")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="frame index cache directory (default: the user cache)")


def build_parser() -> argparse.ArgumentParser:
    """The ``phast`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Exact random frame access from sandboxed decoder workers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="describe a source and its video stream",
                       description="Describe a source's streams and its selected video stream.")
    _add_source_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("frame", help="write one frame as a PNG",
                       description="Decode one frame exactly and write it as a PNG.")
    _add_source_options(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", metavar="N", type=int,
                       help="display index (negative counts from the end)")
    which.add_argument("--time", metavar="T", type=float,
                       help="seconds on the stream clock (the 'time' printed by info/frame): "
                            "the frame shown at that time")
    p.add_argument("-o", "--output", metavar="OUT.png", required=True, help="PNG file to write")
    p.add_argument("--format", choices=PNG_FORMATS, default="rgb24",
                   help="pixel format of the PNG (default rgb24)")
    p.set_defaults(func=cmd_frame)

    p = sub.add_parser("backends", help="list registered backends and probe them",
                       description="List registered backends; each is probed in a child "
                                   "process.")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--timeout", metavar="SECONDS", type=_positive_float,
                   default=DEFAULT_PROBE_TIMEOUT,
                   help=f"seconds each probe may take (default {DEFAULT_PROBE_TIMEOUT:g})")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("power", help="power meter, TDP and one reading",
                       description="Show the power meter phast would use (RAPL, NVML or the "
                                   "CPU-time model), its zones or GPUs, the TDP and its "
                                   "source, and the power over a short reading.")
    p.add_argument("--meter", choices=["auto", "rapl", "nvml", "cpu"], default="auto",
                   help="meter to open (default auto)")
    p.add_argument("--tdp", metavar="WATTS", type=_positive_float, default=None,
                   help="TDP setting (default: $PHAST_TDP_W, RAPL PL1, else 15 W)")
    p.add_argument("--seconds", metavar="S", type=_positive_float, default=1.0,
                   help="length of the reading (default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_power)

    p = sub.add_parser("doctor", help="check the worker sandbox on this host",
                       description="Start a worker and report each sandbox layer: active, or "
                                   "why not. Exit status 1 if a layer the host supports failed.")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("proxy", help="proxy pictures: build them now",
                       description="Proxy pictures for the fallback tiers.")
    proxy_sub = p.add_subparsers(dest="proxy_command", metavar="ACTION", required=True)
    b = proxy_sub.add_parser("build", help="build proxies of FILE... now")
    b.add_argument("files", metavar="FILE", nargs="+")
    b.add_argument("--height", type=_positive_int, default=360,
                   help="proxy height in rows (default 360)")
    b.add_argument("--full", action="store_true",
                   help="every frame (a complete proxy copy), not only keyframes")
    b.add_argument("--cache-dir", metavar="DIR", default=None)
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--shared-store", metavar="URL", default=None,
                   help="also write the proxies to this shared store (directory or fsspec URL, "
                        "e.g. s3://bucket/proxies; default $PHAST_SHARED_STORE with --dask)")
    b.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="build every frame on a Dask cluster (scheduler address, or local:N "
                        "for N local worker processes) into --shared-store; needs phast[farm]")
    b.add_argument("--chunk", type=_positive_int, default=None,
                   help="--dask: frames per task, at least (whole groups of pictures; default "
                        "phast.farm.DEFAULT_CHUNK)")
    b.add_argument("--retries", type=int, default=None,
                   help="--dask: retries of a failed task (default phast.farm.DEFAULT_RETRIES)")
    b.set_defaults(func=cmd_proxy_build)

    p = sub.add_parser("serve", help="serve clients (C, MLT) over a Unix socket",
                       description="Serve phast to other processes over a Unix socket "
                                   "(docs/protocol.md): a client's child on an inherited "
                                   "socketpair (--fd), or shared at a path (--socket; "
                                   "default $XDG_RUNTIME_DIR/phast/serve.sock).")
    p.add_argument("--fd", metavar="N", type=_non_negative_int, default=None,
                   help="serve the one client on inherited socket descriptor N, exit when "
                        "it goes")
    p.add_argument("--socket", metavar="PATH", default=None,
                   help="listen at PATH (mode 0600, in a 0700 directory)")
    p.add_argument("--idle-exit", metavar="S", type=_positive_float, default=None,
                   help="with a socket path: exit after S seconds without clients")
    p.add_argument("--cache-dir", metavar="DIR", default=None)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("cache", help="the on-disk store: stats, clear",
                       description="The on-disk store of frame indices and proxies.")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    c = cache_sub.add_parser("stats", help="bytes, entries, clips, hit rate of lookups")
    c.add_argument("--cache-dir", metavar="DIR", default=None)
    c.add_argument("--shared-store", metavar="URL", default=None,
                   help="also the shared level (default $PHAST_SHARED_STORE)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cache_stats)
    c = cache_sub.add_parser("clear", help="remove everything, or the entries of FILE...")
    c.add_argument("files", metavar="FILE", nargs="*")
    c.add_argument("--cache-dir", metavar="DIR", default=None)
    c.set_defaults(func=cmd_cache_clear)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``phast`` command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except PhastError as e:
        message, status = str(e) or type(e).__name__, 2 if isinstance(e, USAGE_ERRORS) else 1
    except CommandError as e:
        message, status = str(e), e.status
    except KeyboardInterrupt:
        return 130
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
