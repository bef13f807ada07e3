"""``hwbench report``: PNG plots and a markdown summary from a ``torture`` or ``compare`` JSON.

Contract of :func:`make_report`: reads the JSON a run wrote with ``--json`` and writes into
``out`` (created if needed), returning the written paths:

* torture run: ``power.png`` (per-second watts of the run's meter against the budget line),
  ``tiers.png`` (stacked area of the answers per second: EXACT / PROXY / NEAREST / BLANK, and
  requests with no answer), ``distance.png`` (per second, how far the picture shown was from
  the one asked for: p50 and p95, seconds; and the PROXY-or-better share), ``latency.png``
  (histogram and CDF of the request latencies, all
  answers and EXACT answers), ``report.md`` (key figures, the plots embedded).
* compare run: ``peers_latency.png`` (latency CDF per peer), ``peers_power.png`` (per-second
  watts per peer against the budget), ``report.md`` (the peer table, the plots embedded).

matplotlib (the ``bench`` extra) is imported here only, with the Agg backend (no display).
A file that is not such a JSON raises ``ValueError``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TIERS = ("exact", "proxy", "nearest", "blank")
TIER_COLOURS = {"exact": "#2a9d4b", "proxy": "#8ccf5b", "nearest": "#f2b134",
                "blank": "#d9534f", "none": "#9e9e9e"}
#: the old name of "nearest", in runs written before it was renamed
_OLD_TIERS = {"keyframe": "nearest"}


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("hwbench report needs matplotlib: pip install 'phast[bench]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_run(path: str | Path) -> dict[str, Any]:
    """The JSON of a torture or compare run; ``ValueError`` for anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from e
    tool = data.get("tool") if isinstance(data, dict) else None
    if tool not in ("hwbench torture", "hwbench compare"):
        raise ValueError(f"{path}: not a torture or compare JSON (tool = {tool!r})")
    return data


def make_report(run: str | Path, out: str | Path) -> list[Path]:
    """Plots and ``report.md`` for ``run`` into ``out``; returns the written files."""
    data = load_run(run)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if data["tool"] == "hwbench compare":
        return _compare_report(data, folder, Path(run).name)
    return _torture_report(data, folder, Path(run).name)


def watts_series(rep: dict[str, Any]) -> tuple[str, list[float | None]]:
    """The run's per-second marginal power (meter power minus the idle baseline)."""
    series = rep.get("series") or []
    base = float(rep.get("baseline_w") or 0.0)
    return "marginal W", [None if r.get("power_w") is None else r["power_w"] - base
                          for r in series]


def budget_line(rep: dict[str, Any]) -> float | None:
    """The budget in watts (None: the run was ungoverned)."""
    value = rep.get("budget_w")
    return None if value is None else float(value)


# -- torture ----------------------------------------------------------------------------------

def _power_axes(ax: Any, rep: dict[str, Any], label: str | None = None) -> None:
    key, watts = watts_series(rep)
    ts = [r["t"] + 0.5 for r in rep.get("series") or []]
    points = [(t, w) for t, w in zip(ts, watts, strict=True) if w is not None]
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".",
                label=label or key.replace("_", " "))


def _torture_plots(rep: dict[str, Any], folder: Path) -> list[Path]:
    plt = _plt()
    written = []
    budget = budget_line(rep)

    fig, ax = plt.subplots(figsize=(8, 4))
    _power_axes(ax, rep)
    if budget is not None:
        ax.axhline(budget, color="#d9534f", linestyle="--", label=f"budget {budget:.2f} W")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("W")
    ax.set_ylim(bottom=0)
    ax.set_title(f"power per second, {rep.get('meter_label', '')}: budget share "
                 f"{100 * rep['budget_share']:.1f}%")
    ax.legend(loc="upper right")
    written.append(_save(fig, folder / "power.png", plt))

    fig, ax = plt.subplots(figsize=(8, 4))
    series = rep.get("series") or []
    ts = [r["t"] for r in series]
    stacks = {q: [_tier_counts(r).get(q, 0) for r in series] for q in TIERS}
    stacks["none"] = [r["requests"] - sum((r.get("quality") or {}).values()) for r in series]
    if ts:  # each second's counts span [t, t + 1)
        ax.stackplot([*ts, ts[-1] + 1], *([*v, v[-1]] for v in stacks.values()),
                     labels=list(stacks), step="post", colors=[TIER_COLOURS[q] for q in stacks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests per second")
    ax.set_title("answers per second by tier (none: skipped, failed or unanswered)")
    ax.legend(loc="upper right", fontsize="small")
    written.append(_save(fig, folder / "tiers.png", plt))

    fig, ax = plt.subplots(figsize=(8, 4))
    for key, style in (("p50", "-"), ("p95", "--")):
        values = [(r.get("distance_s") or {}).get(key) for r in series]
        ax.step(ts, [float("nan") if v is None else v for v in values], where="post",
                linestyle=style, color="#f2b134", label=f"distance {key} (s)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("|shown - asked| (s)")
    share = ax.twinx()
    share.step(ts, [100 * (r.get("proxy_or_better") or 0) for r in series], where="post",
               color="#2a9d4b", label="PROXY or better (%)")
    share.set_ylabel("PROXY or better (% of requests)")
    share.set_ylim(0, 100)
    ax.set_title("what was shown: how far from the frame asked for, and how often it")
    fig.legend(loc="upper right", fontsize="small")
    written.append(_save(fig, folder / "distance.png", plt))

    log = rep.get("request_log") or []
    all_ms = [1000 * row[5] for row in log if row[5] is not None and row[6] is not None]
    exact_ms = [1000 * row[5] for row in log if row[5] is not None and row[6] == "exact"]
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 4))
    for name, values in (("all answers", all_ms), ("EXACT answers", exact_ms)):
        if values:
            hist.hist(values, bins=40, alpha=0.6, label=f"{name} ({len(values)})")
            _cdf(cdf, values, name)
    for ax in (hist, cdf):
        ax.axvline(rep["period_ms"], color="#d9534f", linestyle="--", label="period")
        ax.set_xlabel("latency of the frame call (ms)")
        ax.legend(fontsize="small")
    hist.set_ylabel("requests")
    cdf.set_ylabel("share of requests")
    fig.suptitle("request latency")
    written.append(_save(fig, folder / "latency.png", plt))
    return written


def _torture_report(rep: dict[str, Any], folder: Path, source: str) -> list[Path]:
    written = _torture_plots(rep, folder)
    counts = rep.get("quality_counts") or {}
    proxy_or_better = (counts.get("exact", 0) + counts.get("proxy", 0)) / max(rep["requests"], 1)
    lat = rep["latency_ms"]
    c = rep.get("clip", {})
    md = [
        f"# hwbench torture: {Path(c.get('path', '?')).name}",
        "",
        f"Source: `{source}`; system `{rep.get('system', 'phast')}`, pattern "
        f"`{rep['pattern']}`, {rep['rate_hz']:g} requests/s for {rep['duration_s']:g} s "
        f"(period {rep['period_ms']:.1f} ms), {c.get('width')}x{c.get('height')}, "
        f"{c.get('frames')} frames.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| meter | {rep.get('meter')} ({rep.get('meter_label')}) |",
        f"| TDP | {rep.get('tdp_w')} W ({rep.get('tdp_source')}) |",
        f"| budget | {_budget_text(rep)} |",
        f"| budget share (marginal power / TDP) | {100 * rep['budget_share']:.1f}% |",
        *([f"| phast's own accounting | {100 * rep['phast_budget_share']:.1f}% |"]
          if rep.get("phast_budget_share") is not None else []),
        f"| CPU share of the process tree (measured) | {100 * rep['tree_cpu_share']:.1f}% |",
        f"| on time | {100 * rep['on_time']:.1f}% of {rep['requests']} requests |",
        f"| PROXY or better | {100 * proxy_or_better:.1f}% of requests |",
        *([f"| BLANK after the first 1 s / 2 s | {_pct(rep['blank_after'].get('1s'))} / "
           f"{_pct(rep['blank_after'].get('2s'))} |"] if rep.get("blank_after") else []),
        *([f"| distance of the picture shown, p50 / p95 | {_sec(rep['distance_s'].get('p50'))}"
           f" / {_sec(rep['distance_s'].get('p95'))} |"] if rep.get("distance_s") else []),
        "| tier mix | " + (", ".join(f"{q} {100 * v:.1f}%" for q, v in
                                    rep["quality_mix"].items()) or "-") + " |",
        f"| latency p50 / p95 / p99 | {_ms(lat['p50'])} / {_ms(lat['p95'])} / "
        f"{_ms(lat['p99'])} ms |",
        f"| other processes' load | {_cores(rep.get('other_load_cores'))} cores |",
        "",
        *([f"Note: {rep['estimate_note']}.", ""] if rep.get("estimate_note") else []),
        "![power](power.png)",
        "",
        "![tiers](tiers.png)",
        "",
        *(["![distance](distance.png)", ""] if rep.get("distance_s") else []),
        "![latency](latency.png)",
        "",
    ]
    written.append(_write(folder / "report.md", md))
    return written


def _tier_counts(row: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q, n in (row.get("quality") or {}).items():
        q = _OLD_TIERS.get(q, q)
        counts[q] = counts.get(q, 0) + n
    return counts


def _sec(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _budget_text(rep: dict[str, Any]) -> str:
    b = rep.get("budget")
    return "off (ungoverned)" if b is None else f"{100 * b:g}% of TDP = {rep['budget_w']:.2f} W"


# -- compare ----------------------------------------------------------------------------------

def _compare_report(rep: dict[str, Any], folder: Path, source: str) -> list[Path]:
    plt = _plt()
    written = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, values in (rep.get("latencies_ms") or {}).items():
        if values:
            _cdf(ax, values, name)
    ax.axvline(rep["period_ms"], color="#d9534f", linestyle="--", label="period")
    ax.set_xscale("log")
    ax.set_xlabel("latency of the frame call (ms, log scale)")
    ax.set_ylabel("share of requests")
    ax.set_title(f"latency CDF per peer, pattern {rep['pattern']}, {rep['rate_hz']:g} Hz")
    ax.legend(fontsize="small")
    written.append(_save(fig, folder / "peers_latency.png", plt))

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, run in (rep.get("runs") or {}).items():
        _power_axes(ax, run, label=name)
    budget = budget_line(next(iter((rep.get("runs") or {}).values()), {}))
    if budget is not None:
        ax.axhline(budget, color="#d9534f", linestyle="--", label=f"phast budget {budget:.2f} W")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("W")
    ax.set_ylim(bottom=0)
    ax.set_title(f"power per second per peer, {rep.get('meter_label')}")
    ax.legend(fontsize="small")
    written.append(_save(fig, folder / "peers_power.png", plt))

    c = rep["clip"]
    md = [
        f"# hwbench compare: {Path(c['path']).name}",
        "",
        f"Source: `{source}`; pattern `{rep['pattern']}`, {rep['rate_hz']:g} requests/s for "
        f"{rep['duration_s']:g} s per peer, {c.get('width')}x{c.get('height')}, "
        f"{c['frames']} frames; same schedule for every peer: {rep['same_schedule']}.",
        f"Meter: {rep.get('meter')} ({rep.get('meter_label')}), TDP {rep.get('tdp_w')} W "
        f"({rep.get('tdp_source')}), phast's budget {rep.get('budget')} of TDP.",
        "",
        "| peer | on time | exact | exact and on time | wrong frames | p50 ms | p95 ms | "
        "p99 ms | CPU share | budget share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rep["peers"].items():
        lat = r["latency_ms"]
        md.append(f"| {name} {r.get('version') or ''} | {_pct(r['on_time'])} | "
                  f"{_pct(r['exact_share'])} | {_pct(r['exact_on_time'])} | "
                  f"{r['wrong_frames']} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | "
                  f"{_ms(lat['p99'])} | {_pct(r['cpu_share'])} | {_pct(r['budget_share'])} |")
    md += [f"| {name} | skipped: {why} | | | | | | | | |"
           for name, why in (rep.get("skipped") or {}).items()]
    ver = rep.get("verification") or {}
    md += ["", f"Exact frames are checked against a {ver.get('method', 'reference decode')} "
           f"(tolerance {ver.get('tolerance')}, window +-{ver.get('window')}).", "",
           "![latency](peers_latency.png)", "", "![power](peers_power.png)", ""]
    written.append(_write(folder / "report.md", md))
    return written


# -- helpers ----------------------------------------------------------------------------------

def _cdf(ax: Any, values: list[float], label: str) -> None:
    s = sorted(values)
    ax.plot(s, [(k + 1) / len(s) for k in range(len(s))], drawstyle="steps-post", label=label)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines))
    return path


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _cores(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
