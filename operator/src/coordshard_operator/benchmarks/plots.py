"""PNG plots of benchmark results, for docs/benchmarks.md.

matplotlib is imported only here and only when plots are asked for
(``coordshard bench --plots DIR``); it comes with the ``dev`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["plot"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise SystemExit("plots need matplotlib: pip install 'coordshard[dev]'") from e
    return plt


def _save(plt: Any, fig: Any, path: Path) -> list[Path]:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _plan(data: dict[str, Any], out: Path) -> list[Path]:
    plt = _pyplot()
    rows = data["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for members in sorted({r[1] for r in rows}):
        for event, style in (("crash", "-o"), ("join", "--s")):
            pts = sorted((r[0], r[4]) for r in rows if r[1] == members and r[2] == event)
            left.plot(
                [p[0] for p in pts], [p[1] for p in pts], style, label=f"{members} members, {event}"
            )
    left.set_xscale("log", base=2)
    left.set_xlabel("shards N")
    left.set_ylabel("median ms per plan()")
    left.axhline(20, color="grey", lw=0.8, ls=":")
    left.text(64, 20.5, "target 20 ms", color="grey", fontsize=8)
    left.set_title("planner time")
    left.legend(fontsize=7)
    labels = [f"N={r[0]}\nn={r[1]}\n{r[2]}" for r in rows]
    x = range(len(rows))
    right.bar([i - 0.2 for i in x], [r[7] for r in rows], width=0.4, label="optimum")
    right.bar([i + 0.2 for i in x], [r[6] for r in rows], width=0.4, label="moved")
    right.set_yscale("symlog")
    right.set_xticks(list(x), labels, fontsize=5)
    right.set_ylabel("shards")
    right.set_title("shards moved vs the optimum")
    right.legend(fontsize=8)
    return _save(plt, fig, out / "bench-plan.png")


def _latency_figure(
    series: dict[str, list[float]], *, title: str, target: float, path: Path
) -> list[Path]:
    plt = _pyplot()
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    for label, values in series.items():
        if not values:
            continue
        hist.hist(values, bins=30, alpha=0.6, label=label)
        ordered = sorted(values)
        cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    for ax in (hist, cdf):
        ax.axvline(target, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("ms")
        ax.legend(fontsize=8)
    hist.set_ylabel("count")
    cdf.set_ylabel("fraction ≤ x")
    cdf.axhline(0.99, color="grey", lw=0.6, ls=":")
    fig.suptitle(f"{title} (dotted: target {target:g} ms)")
    return _save(plt, fig, path)


def _local(data: dict[str, Any], out: Path) -> list[Path]:
    s = data.get("samples", {})
    return _latency_figure(
        {
            "kill → each former shard answers": s.get("shard_ms", []),
            "kill → all former shards answer": s.get("kill_ms", []),
        },
        title="local mode failover latency, kill -9, grace 0",
        target=500,
        path=out / "bench-local.png",
    )


def _generic(name: str) -> Callable[[dict[str, Any], Path], list[Path]]:
    def draw(data: dict[str, Any], out: Path) -> list[Path]:
        samples = data.get("samples") or {}
        if not samples:
            return []
        return _latency_figure(
            samples,
            title=name,
            target=float(data.get("target_ms", 0) or 0),
            path=out / f"bench-{name}.png",
        )

    return draw


def _handoff(data: dict[str, Any], out: Path) -> list[Path]:
    return _latency_figure(
        data.get("samples", {}),
        title="engine hand-off: member lost → every orphan shard processed",
        target=100,
        path=out / "bench-handoff.png",
    )


def _operator(data: dict[str, Any], out: Path) -> list[Path]:
    return _latency_figure(
        {"pod DELETED → orphans delivering": data.get("samples", {}).get("failover_ms", [])},
        title="operator failover (API-server double, real kopf, grace 0)",
        target=300,
        path=out / "bench-operator.png",
    )


def _throughput(data: dict[str, Any], out: Path) -> list[Path]:
    s = data.get("samples", {})
    if not s.get("peak_cpu_us"):
        return []
    plt = _pyplot()
    fig, (cpu, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    stacks = {
        "ceiling (raw nats-py)": dict(
            zip(("client", "nats-server"), s["ceiling_cpu_us"], strict=True)
        ),
        "end to end (SDK, 2 workers)": dict(
            zip(("client", "worker 1", "worker 2", "nats-server"), s["peak_cpu_us"], strict=True)
        ),
    }
    for x, parts in enumerate(stacks.values()):
        bottom = 0.0
        for name, value in parts.items():
            cpu.bar(x, value, bottom=bottom)
            cpu.text(x, bottom + value / 2, f"{name} {value:.0f}", ha="center", fontsize=7)
            bottom += value
    cpu.set_xticks(range(len(stacks)), list(stacks))
    cpu.set_ylabel("CPU µs per command (at peak)")
    for label, key in (("peak, 1000 in flight", "peak_ms"), ("half of peak, paced", "half_ms")):
        ordered = sorted(s.get(key, []))
        if ordered:
            cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    cdf.axvline(50, color="grey", lw=0.8, ls=":")
    cdf.axhline(0.99, color="grey", lw=0.6, ls=":")
    cdf.set_xlabel("outcome latency, ms (dotted: 50 ms target at half load)")
    cdf.set_ylabel("fraction ≤ x")
    cdf.legend(fontsize=8)
    fig.suptitle("Coordinate Service throughput: where the CPU goes, and latency")
    return _save(plt, fig, out / "bench-throughput.png")


def _load_curve(data: dict[str, Any], out: Path) -> list[Path]:
    """CPU per command by process against the rate, and latency with cores busy."""
    columns, rows = data["columns"], data["rows"]
    if not rows:
        return []
    plt = _pyplot()
    col = {name: i for i, name in enumerate(columns)}
    processes = [c.removesuffix(" µs") for c in columns if c.endswith(" µs") and c != "total µs"]
    labels = [f"{r[col['achieved/s']]}/s" if r[0].isdigit() else "peak" for r in rows]
    fig, (cpu, lat) = plt.subplots(1, 2, figsize=(12, 4.2))
    bottom = [0.0] * len(rows)
    for name in processes:
        values = [float(r[col[f"{name} µs"]]) for r in rows]
        cpu.bar(range(len(rows)), values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    cpu.set_xticks(range(len(rows)), labels, fontsize=7, rotation=30)
    cpu.set_ylabel("CPU µs per command")
    cpu.set_title("CPU per command falls as the rate rises")
    cpu.legend(fontsize=8)
    paced = [r for r in rows if r[0].isdigit()]
    rates = [r[col["achieved/s"]] for r in paced]
    lat.plot(rates, [r[col["p50 ms"]] for r in paced], "-o", label="p50")
    lat.plot(rates, [r[col["p99 ms"]] for r in paced], "-s", label="p99")
    lat.axhline(50, color="grey", lw=0.8, ls=":")
    lat.set_xlabel("commands/s, paced")
    lat.set_ylabel("outcome latency, ms")
    busy = lat.twinx()
    busy.plot(rates, [r[col["cores busy"]] for r in paced], "--", color="grey", label="cores busy")
    busy.set_ylabel("cores busy (of all)")
    busy.set_ylim(0, max(2.0, max(r[col["cores busy"]] for r in paced)) * 1.05)
    lines = lat.get_legend_handles_labels()[0] + busy.get_legend_handles_labels()[0]
    lat.legend(lines, [str(line.get_label()) for line in lines], fontsize=8, loc="upper left")
    lat.set_title("latency and cores busy (dotted: 50 ms)")
    return _save(plt, fig, out / "bench-load-curve.png")


def _sqlite_lock(data: dict[str, Any], out: Path) -> list[Path]:
    by_mode: dict[str, list[float]] = {}
    for key, waits in data.get("samples", {}).items():
        mode = key.rsplit("-", 2)[0]  # "<mode>-<round>-<process>"
        by_mode.setdefault(mode, []).extend(waits)
    return _latency_figure(
        {f"{mode}: wait for the write lock": waits for mode, waits in by_mode.items()},
        title="two workers sharing one SQLite file",
        target=50,
        path=out / "bench-sqlite-lock.png",
    )


def _scale(data: dict[str, Any], out: Path) -> list[Path]:
    """Failover p50 against N, one line per layout and member count; delivered/s against N."""
    columns, rows = data["columns"], data["rows"]
    if not rows:
        return []
    plt = _pyplot()
    col = {name: i for i, name in enumerate(columns)}
    series = sorted({(r[col["layout"]], r[col["members"]]) for r in rows})
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for layout, members in series:
        pts = sorted((r[col["shards"]], r[col["failover p50 ms"]]) for r in rows
                     if (r[col["layout"]], r[col["members"]]) == (layout, members)
                     and r[col["failover p50 ms"]] is not None)  # fmt: skip
        style = "-o" if layout == "engine" else "--s"
        ax.plot(
            [p[0] for p in pts], [p[1] for p in pts], style, label=f"{layout}, {members} members"
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("shards N")
    ax.set_ylabel("failover p50, ms (every orphan delivering)")
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    ax.set_title("member lost → orphans delivering (dotted: 100 ms)")
    ax.legend(fontsize=7)
    written = _save(plt, fig, out / "bench-scale-failover.png")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for layout, members in series:
        rates = sorted((r[col["shards"]], r[col["steady/s"]], r[col["after/s"]]) for r in rows
                     if (r[col["layout"]], r[col["members"]]) == (layout, members))  # fmt: skip
        (line,) = ax.plot([p[0] for p in rates], [p[1] for p in rates], "-o",
                          label=f"{layout}, {members} members: steady")  # fmt: skip
        ax.plot([p[0] for p in rates], [p[2] for p in rates], ":x", color=line.get_color(),
                label=f"{layout}, {members} members: the window after the crash")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shards N")
    ax.set_ylabel("group deliveries/s (median of trials)")
    ax.set_title("delivered/s, steady and after the crash")
    ax.legend(fontsize=6)
    return written + _save(plt, fig, out / "bench-scale-delivered.png")


_DRAW: dict[str, Callable[[dict[str, Any], Path], list[Path]]] = {
    "scale": _scale,
    "plan": _plan,
    "local": _local,
    "handoff": _handoff,
    "operator": _operator,
    "sqlite-lock": _sqlite_lock,
    "throughput": _throughput,
    "load-curve": _load_curve,
}


def plot(name: str, data: dict[str, Any], out: Path) -> list[Path]:
    """Draw the plots of suite ``name`` into ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    return _DRAW.get(name, _generic(name))(data, out)
