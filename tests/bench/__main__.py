"""Run the benchmarks: `python -m tests.bench [--threads 1 2] [--repeats 20] [--only vision quality]`."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

MODULES = ("vision", "quality", "store", "sync", "search", "intake", "booking_check", "inputs")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.machine()}"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {system}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per stage (median reported)")
    parser.add_argument("--only", nargs="+", choices=MODULES, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()

    results = []
    for name in args.only or MODULES:
        try:
            module = importlib.import_module(f"tests.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tests.bench.{name}":
                continue  # that part of the product has no benchmark yet
            raise
        for threads in args.threads:
            print(f"running {name} benchmarks on {threads} thread(s)...", flush=True)
            results.extend(module.run(threads=threads, repeats=args.repeats))

    header = f"Benchmarks, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}"
    lines = [header, "", f"| {'group':<8} | {'stage':<44} | threads | {'median':>10} | unit | runs | note |",
             f"|{'-' * 10}|{'-' * 46}|---------|{'-' * 12}|------|------|------|"]
    for r in results:
        lines.append(f"| {r.group:<8} | {r.stage:<44} | {r.threads:>7} | {r.median:>10.2f} | {r.unit:<4} | "
                     f"{r.runs:>4} | {r.note} |")
    table = "\n".join(lines)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(table + "\n")
    (args.out / "bench.json").write_text(json.dumps({"machine": machine(), "results": [asdict(r) for r in results]},
                                                    indent=2))
    print(f"\nwritten to {args.out / 'bench.md'} and {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
