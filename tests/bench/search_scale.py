"""`make bench-scale`: the face search benchmark at county scale (1 M and 15 M templates; hours, not minutes).

``python -m tests.bench.search_scale [--sizes 1000000 15000000] [--threads 1] [--probes N] [--scratch DIR]
[--pgvector] [--out DIR]`` prints progress lines and the table and writes ``search-scale.md`` and
``search-scale.json`` under ``--out``. Every figure is measured beside numpy exact search in the same run
(see ``tests/bench/search.py``). Above 2 M the gallery is generated into a scratch file in ``--scratch``
(default: the temporary folder; 15 M: 7.2 GiB, deleted at the end) and streamed from it, and the index
file goes to the temporary folder too (15 M: 7.6 GiB). 15 M took 44 min on 2 busy cores, its resident set
peaking at 9.4 GiB (8.4 GiB of it the index); pgvector at 1 M builds its HNSW graph for a long time and is off unless
``--pgvector`` is given. Each size's rows are written as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tests.bench import Result
from tests.bench.__main__ import machine
from tests.bench.search import measure


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.search_scale", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 15_000_000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--probes", type=int, default=1000, help="mated probes per size")
    parser.add_argument("--pgvector", action="store_true", help="also pgvector HNSW (slow to build at 1 M)")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for a generated gallery above 2 M")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        print(f"search benchmark at {n:,} templates...", flush=True)
        results += measure(n, args.threads, nprobes=tuple(args.nprobe), pgvector=args.pgvector,
                           probes_count=args.probes, scratch=args.scratch)
        write(results, args.out)
    return 0


def write(results: list[Result], out: Path) -> None:
    """The table so far, printed and written (a long run keeps what it has measured)."""
    lines = [f"Search at scale, {machine()}", "", "| stage | threads | median | unit | runs | note |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.threads} | {r.median:.2f} | {r.unit} | {r.runs} | {r.note} |" for r in results]
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search-scale.md").write_text(table + "\n")
    (out / "search-scale.json").write_text(json.dumps({"machine": machine(),
                                                       "results": [asdict(r) for r in results]}, indent=2))
    print(f"\nwritten to {out / 'search-scale.md'} and {out / 'search-scale.json'}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
