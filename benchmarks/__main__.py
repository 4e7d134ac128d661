"""``python -m benchmarks run [--quick]``: see benchmarks/README.md."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import baseline, bounds, report, scenario
from benchmarks.harness import Emulators

QUICK_WAVES = [
    ("salesforce", "email", 1_000),
    ("salesforce", "sms", 1_000),
    ("hubspot", "email", 1_000),
    ("hubspot", "sms", 1_000),
    ("hubspot", "email", 10_000),
]
FULL_WAVES = [
    (crm, ch, n)
    for n in (1_000, 10_000, 100_000)
    for crm in ("salesforce", "hubspot")
    for ch in ("email", "sms")
]
QUICK_PULLS = [10_000, 100_000]
FULL_PULLS = [10_000, 1_000_000]
QUICK_BASELINES = [("salesforce", "email", 1_000), ("hubspot", "email", 1_000)]
FULL_BASELINES = [
    ("salesforce", "email", 1_000),
    ("hubspot", "email", 1_000),
    ("salesforce", "email", 10_000),
    ("salesforce", "sms", 1_000),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the scenarios and write benchmarks/results/")
    run.add_argument("--quick", action="store_true", help="1,000 and 10,000 contacts only (< 10 minutes)")
    run.add_argument("--latency-ms", type=float, default=40.0, help="emulator latency a call (default 40)")
    run.add_argument("--sms-mps", type=float, default=100.0, help="Twilio sender throughput (default 100/s)")
    run.add_argument("--only", default="", help="comma-separated scenario name prefixes, e.g. hubspot-email")
    run.add_argument("--skip-100k-sms", action="store_true", help="leave out the 100,000-contact SMS waves")
    run.add_argument("--load-seconds", type=float, default=10.0)
    run.add_argument(
        "--wave-web-processes",
        type=int,
        default=0,
        help="[daemon] web_processes for the wave scenarios (default 0: served from a thread of the daemon)",
    )
    run.add_argument(
        "--task-batch-wait",
        type=float,
        default=None,
        help="[daemon] task_batch_wait in seconds for the wave scenarios (default: the daemon's, 1.5)",
    )
    run.add_argument(
        "--load-runs", type=int, default=3, help="throughput runs a database, on one wave (default 3)"
    )
    run.add_argument(
        "--web-processes",
        type=int,
        default=2,
        help="[daemon] web_processes for the POST /r throughput test (default 2; 0 = a thread of the daemon)",
    )
    run.add_argument(
        "--results", type=Path, default=report.RESULTS, help="where to write (default benchmarks/results)"
    )
    run.add_argument(
        "--append", action="store_true", help="add to the existing results instead of replacing them"
    )
    sub.add_parser("report", help="write results.md and results.png again from results.json")
    args = parser.parse_args(argv)
    if args.command == "report":
        print(f"wrote {report.rerender()}")
        return 0
    started = datetime.now(timezone.utc)
    waves = QUICK_WAVES if args.quick else FULL_WAVES
    if args.skip_100k_sms:
        waves = [w for w in waves if not (w[1] == "sms" and w[2] >= 100_000)]
    pulls = QUICK_PULLS if args.quick else FULL_PULLS
    bases = QUICK_BASELINES if args.quick else FULL_BASELINES
    only = [p for p in args.only.split(",") if p]
    # A pull named in full runs even where only the other set has it (the 100,000 pull is quick's
    # alone): as a prefix, salesforce-pull-100000 would select the full run's 1,000,000 pull instead.
    named = [n for n in (*QUICK_PULLS, *FULL_PULLS) if f"salesforce-pull-{n}" in only]
    pulls = pulls + [n for n in named if n not in pulls]

    def wanted(name: str) -> bool:
        # A full scenario name selects that scenario alone (salesforce-sms-10000 is not also
        # salesforce-sms-100000); anything else is a prefix.
        return not only or any(name == p or (name.startswith(p) and p not in names) for p in only)

    latency = args.latency_ms / 1000
    entries: list[tuple[Any, bounds.Floor]] = []
    loads: list[dict[str, Any]] = []
    previous = report.previous_results(args.results) if args.append else None
    meta = {
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "latency_ms": args.latency_ms,
        "sms_mps": args.sms_mps,
        "load": loads,
    }

    def save() -> None:
        # After every scenario: a run stopped half-way keeps what it measured.
        meta["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
        print(f"wrote {report.write(entries, meta, args.results, previous=previous)}", flush=True)

    emu = Emulators(args.latency_ms)
    try:
        jobs: list[tuple[str, Any]] = []
        jobs += [
            (
                f"{c}-{ch}-{n}",
                lambda c=c, ch=ch, n=n: scenario.run_wave(
                    emu, c, ch, n, web_processes=args.wave_web_processes, task_batch_wait=args.task_batch_wait
                ),
            )
            for c, ch, n in waves
        ]
        jobs += [(f"salesforce-pull-{n}", lambda n=n: scenario.run_pull(emu, "salesforce", n)) for n in pulls]
        jobs += [
            (f"baseline-{c}-{ch}-{n}", lambda c=c, ch=ch, n=n: baseline.run_baseline(emu, c, ch, n))
            for c, ch, n in bases
        ]
        names = {name for name, _ in jobs} | {"load-sqlite", "load-postgresql"}
        for name, job in jobs:
            if not wanted(name):
                continue
            t = time.monotonic()
            print(f"== {name} …", flush=True)
            try:
                r = job()
            except Exception:
                traceback.print_exc()
                print(f"!! {name} failed", flush=True)
                continue
            f = bounds.floor(
                r.crm,
                r.channel,
                r.contacts,
                accounts=max(10, r.contacts // 100),
                responses=r.responses,
                latency=latency,
                sms_mps=args.sms_mps,
                mode="pull" if r.mode == "pull" else "wave",
            )
            entries.append((r, f))
            print(
                f"   {time.monotonic() - t:.0f} s: wall {r.wall_seconds:.1f} s (floor {f.seconds:.1f} s), "
                f"RSS {r.peak_rss_mb:.0f} MB, p50/p99 {r.latency_p50}/{r.latency_p99}, calls "
                f"{bounds.grouped(r.calls)} vs {f.calls}",
                flush=True,
            )
            save()
        for database in ("sqlite", "postgresql"):
            if not wanted(f"load-{database}"):
                continue
            print(f"== load-{database} …", flush=True)
            try:
                runs = scenario.run_load(
                    emu, database, 500.0, args.load_seconds, args.web_processes, args.load_runs
                )
                loads.extend(runs)
                for lo in runs:
                    print(f"   {lo}", flush=True)
                save()
            except Exception:
                traceback.print_exc()
    finally:
        emu.close()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
