"""`make bench-scale`: the face search benchmark at county scale (1 M and 15 M templates; hours, not minutes).

``python -m tests.bench.search_scale [--sizes 1000000 15000000] [--threads 1] [--pgvector] [--out DIR]``
prints the table and writes ``search-scale.md`` and ``search-scale.json`` under ``--out``. Every figure
is measured beside numpy exact search in the same run (see ``tests/bench/search.py``). 15 M needs about
8 GiB for the index plus 1 GiB of work space; pgvector at 1 M builds its HNSW graph for a long time and
is off unless ``--pgvector`` is given.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tests.bench.__main__ import machine
from tests.bench.search import measure


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.search_scale", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 15_000_000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--probes", type=int, default=1000, help="mated probes per size")
    parser.add_argument("--pgvector", action="store_true", help="also pgvector HNSW (slow to build at 1 M)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        print(f"search benchmark at {n:,} templates...", flush=True)
        results += measure(n, args.threads, nprobes=tuple(args.nprobe), pgvector=args.pgvector,
                           probes_count=args.probes)
    lines = [f"Search at scale, {machine()}", "", "| stage | threads | median | unit | runs | note |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.threads} | {r.median:.2f} | {r.unit} | {r.runs} | {r.note} |" for r in results]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search-scale.md").write_text(table + "\n")
    (args.out / "search-scale.json").write_text(json.dumps({"machine": machine(),
                                                            "results": [asdict(r) for r in results]}, indent=2))
    print(f"\nwritten to {args.out / 'search-scale.md'} and {args.out / 'search-scale.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
