"""Results → Markdown table, PNG chart and a description of the machine."""

# ruff: noqa: S603 - the benchmark starts its own processes (psql) with fixed argument lists

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.bounds import Floor, floor, grouped

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def call_rows(calls: dict[str, int], minimum: dict[str, int]) -> list[tuple[str, int, int, float | None]]:
    got = grouped(calls)
    rows = []
    for job in sorted(set(got) | {k for k, v in minimum.items() if v}):
        lo, hi = minimum.get(job, 0), got.get(job, 0)
        rows.append((job, hi, lo, hi / lo if lo else (math.inf if hi else None)))
    return rows


def markdown(entries: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        "# nps-sync benchmark results",
        "",
        f"Run: `{meta['command']}` — {meta['started']} → {meta['finished']} UTC, emulator latency "
        f"{meta['latency_ms']:.0f} ms a call. Machine: see [machine.md](machine.md). Chart: "
        "[results.png](results.png).",
        "",
        "## Scenarios",
        "",
        "| scenario | contacts | responses | wall s | floor s | wall/floor | peak RSS MB | "
        "answer→task p50 s | p99 s | worst calls ÷ minimum | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in entries:
        r, f = e["result"], e["floor"]
        rows = call_rows(r["calls"], f["calls"])
        worst = max((x[3] for x in rows if x[3] is not None), default=None)
        out.append(
            f"| {r['name']} | {r['contacts']:,} | {r['responses']:,} | {_fmt(r['wall_seconds'], 1)} | "
            f"{_fmt(f['seconds'], 1)} | {_fmt(r['wall_seconds'] / f['seconds'] if f['seconds'] else None)} | "
            f"{_fmt(r['peak_rss_mb'], 0) if r['mode'] != 'baseline' else '—'} | {_fmt(r['latency_p50'])} | "
            f"{_fmt(r['latency_p99'])} | {_fmt(worst)} | {'; '.join(r['notes'])} |"
        )
    out += ["", "## API calls by kind (measured / minimum)", ""]
    for e in entries:
        r, f = e["result"], e["floor"]
        parts = []
        for job, hi, lo, ratio in call_rows(r["calls"], f["calls"]):
            parts.append(f"{job} {hi:,}/{lo:,}" + (f" ({ratio:.2f}×)" if ratio is not None else ""))
        out.append(
            f"- **{r['name']}**: "
            + ", ".join(parts)
            + f". Raw: `{json.dumps(r['calls'])}`"
            + (f"; HubSpot 429s: `{json.dumps(r['rejected'])}`" if r.get("rejected") else "")
        )
        reads = (
            f" Audience reads: {r['reads']}, {r['reads_at_emulator']:.2f} s at the emulator (its latency "
            f"included) + {r['reads_between']:.2f} s between one's answer and the next's request."
            if r.get("reads")
            else ""
        )
        out.append(
            f"  Floor: {f['how']}; wave phase {r['wave_seconds']:.1f} s + tail {r['tail_seconds']:.1f} s."
            + reads
        )
    loads = meta.get("load", [])
    if loads:
        out += [
            "",
            "## POST /r/{token} throughput (load generator in its own process)",
            "",
            "Each run answers surveys of one wave not answered before, once the daemon has caught up"
            " with the run before it.",
            "",
            "| database | run | web processes | target/s | achieved/s | requests | errors | p50 ms "
            "| p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lo in loads:
            web = lo.get("web_processes", 0) or "0 (a thread)"
            out.append(
                f"| {lo['database']} | {lo.get('run', 1)} | {web} | {lo['rate']:.0f} | "
                f"{lo['achieved']:.0f} | {lo['requests']:,} | {lo['errors']} | {lo['p50_ms']:.1f} | "
                f"{lo['p99_ms']:.1f} |"
            )
    out.append("")
    return "\n".join(out)


def chart(entries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    waves = [e for e in entries if e["result"]["mode"] in ("wave", "baseline")]
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    names = [e["result"]["name"] for e in waves]
    total_calls = [sum(grouped(e["result"]["calls"]).values()) for e in waves]
    minimum = [sum(e["floor"]["calls"].values()) for e in waves]
    y = range(len(names))
    axes[0].barh([i + 0.2 for i in y], total_calls, height=0.4, label="measured")
    axes[0].barh([i - 0.2 for i in y], minimum, height=0.4, label="API minimum")
    axes[0].set_yticks(list(y), names, fontsize=7)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("API calls (log)")
    axes[0].legend()
    wall = [e["result"]["wall_seconds"] for e in waves]
    floor_s = [max(e["floor"]["seconds"], 0.01) for e in waves]
    axes[1].barh([i + 0.2 for i in y], wall, height=0.4, label="wall time")
    axes[1].barh([i - 0.2 for i in y], floor_s, height=0.4, label="rate-limit lower bound")
    axes[1].set_yticks(list(y), [""] * len(names))
    axes[1].set_xscale("log")
    axes[1].set_xlabel("seconds (log)")
    axes[1].legend()
    fig.suptitle("nps-sync vs the API floor and a one-call-per-record baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return "\n".join(
        [
            "# The machine these results come from",
            "",
            f"- CPU: {cpu}, {os.cpu_count()} logical cores",
            f"- Memory: {mem}",
            f"- OS: {platform.platform()}",
            f"- Python: {platform.python_version()} ({platform.python_implementation()})",
            f"- SQLite: {__import__('sqlite3').sqlite_version}",
            "- PostgreSQL: "
            + sh(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "show server_version"]),
            "- Daemon, emulators and load generator all run on this machine, each in its own process, over "
            "127.0.0.1; the emulators add a fixed latency to every call.",
            "",
        ]
    )


def previous_results(folder: Path = RESULTS) -> dict[str, Any] | None:
    """The results.json a run starts from (read once: the run rewrites it after every scenario)."""
    path = folder / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def write(
    entries: list[tuple[Any, Floor]],
    meta: dict[str, Any],
    folder: Path = RESULTS,
    *,
    previous: dict[str, Any] | None = None,
) -> Path:
    """Write the report. With ``previous`` (the results.json the run started from: ``--append``) its
    scenarios are kept unless this run measured them again, so a long scenario can be run on its own
    and added."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [{"result": asdict(r), "floor": asdict(f)} for r, f in entries]
    meta = dict(meta)
    if previous is not None:
        old = previous
        names = {e["result"]["name"] for e in data}
        data = [e for e in old["entries"] if e["result"]["name"] not in names] + data
        databases = {lo["database"] for lo in meta.get("load", [])}
        meta["load"] = [
            lo for lo in old["meta"].get("load", []) if lo["database"] not in databases
        ] + meta.get("load", [])
        meta["command"] = f"{old['meta']['command']}; then {meta['command']}"
        meta["started"] = old["meta"]["started"]
    (folder / "results.json").write_text(json.dumps({"meta": meta, "entries": data}, indent=1, default=str))
    (folder / "results.md").write_text(markdown(data, meta))
    chart(data, folder / "results.png")
    (folder / "machine.md").write_text(machine())
    return folder / "results.md"


def rerender(folder: Path = RESULTS) -> Path:
    """Write results.md and the chart again from results.json (after a change to the report)."""
    stored = json.loads((folder / "results.json").read_text())
    meta = stored["meta"]
    for e in stored["entries"]:  # floors again, from the sizes: the formulas may have been corrected
        r = e["result"]
        again = floor(
            r["crm"],
            r["channel"],
            r["contacts"],
            accounts=max(10, r["contacts"] // 100),
            responses=r["responses"],
            latency=meta["latency_ms"] / 1000,
            sms_mps=meta.get("sms_mps", 100.0),
            mode="pull" if r["mode"] == "pull" else "wave",
        )
        e["floor"] = asdict(again)
    (folder / "results.json").write_text(json.dumps(stored, indent=1, default=str))
    (folder / "results.md").write_text(markdown(stored["entries"], stored["meta"]))
    chart(stored["entries"], folder / "results.png")
    return folder / "results.md"
