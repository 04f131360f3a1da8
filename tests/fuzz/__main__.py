"""``make fuzz``: coverage-guided fuzzing (atheris) of one target, or all of them one after another.

    python -m tests.fuzz wire --runs 1000000          # one target
    python -m tests.fuzz all --runs 1000000           # every target, each in its own process

Each run starts from the seed corpus in ``tests/fuzz/corpus/<target>/`` and writes what it learns to a
scratch folder (``fuzz-work/<target>/``, not the repository's corpus). A crash leaves ``crash-*`` there and
exits non-zero; minimise it, add the fixed input to the seed corpus and fix the code.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def _run_one(target: str, runs: int, work: Path, max_len: int) -> int:
    import atheris

    from tests.fuzz.targets import CORPUS, TARGETS, quiet_logging

    if target not in TARGETS:
        print(f"unknown target {target!r}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    quiet_logging()
    scratch = work / target
    scratch.mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], f"-runs={runs}", f"-max_len={max_len}", f"-artifact_prefix={scratch}/",
            "-timeout=10", "-rss_limit_mb=3072", "-print_final_stats=1", str(scratch), str(CORPUS / target)]
    atheris.Setup(args, TARGETS[target])
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="wire, command, nist, config, or all")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("fuzz-work"))
    parser.add_argument("--max-len", type=int, default=16384)
    ns = parser.parse_args(argv)
    if ns.target != "all":
        with_instrumentation()
        return _run_one(ns.target, ns.runs, ns.work, ns.max_len)
    from tests.fuzz.targets import TARGETS

    failed = 0
    for name in TARGETS:
        rc = subprocess.call([sys.executable, "-m", "tests.fuzz", name, "--runs", str(ns.runs),
                              "--work", str(ns.work), "--max-len", str(ns.max_len)])
        print(f"fuzz {name}: exit {rc}", flush=True)
        failed |= rc != 0
    return 1 if failed else 0


def with_instrumentation() -> None:
    """Instrument the project's own modules (and the parsers they call) for coverage feedback."""
    import atheris

    with atheris.instrument_imports(include=["sync", "appliance.config", "cbor2", "nistitl", "tomllib", "tomli"]):
        import appliance.config  # noqa: F401
        import sync.county.config  # noqa: F401
        import sync.county.gallery.nist.codec  # noqa: F401
        import sync.county.gallery.nist.validate  # noqa: F401
        import sync.protocol.wire  # noqa: F401
        import sync.station.config  # noqa: F401
        import sync.station.remote  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
