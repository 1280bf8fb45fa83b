"""Run one fuzz target under atheris (libFuzzer) for a bounded time.

    python -m fuzz.run TARGET [--seconds N] [-- libFuzzer flags...]
    python -m fuzz.run TARGET --replay FILE...   # re-run inputs (a crasher), no fuzzing

TARGET is ``tracefs``, ``trace-cmd``, ``perf-script`` or ``auto``.  New
inputs go to ``build/fuzz/TARGET/corpus`` (kept between runs, not in git),
crashers to ``build/fuzz/TARGET/crash-*``; the saved seeds of ``fuzz/corpus``
are read, never written.  The exit status is libFuzzer's: 0 when nothing
was found.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("tracefs", "trace-cmd", "perf-script", "auto")
#: Tokens of the three formats for libFuzzer's dictionary mutations.
DICT = Path(__file__).resolve().parent / "trace.dict"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, instrument ingest, hand the target to libFuzzer."""
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time (default 60)")
    parser.add_argument("--max-len", type=int, default=4096, help="largest input in bytes")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "fuzz",
                        help="where the growing corpus and crashers go")
    parser.add_argument("--replay", type=Path, nargs="+", help="run these inputs once and stop")
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags (after --)")
    args = parser.parse_args(argv)

    # A shared machine: one core per fuzzer (polars would take them all for
    # inputs of a few lines, where threads only add overhead).
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import atheris

    # No atheris hooks: "RegEx" breaks `tokenize` (its pattern proxy has no
    # match(s, pos)), which polars reaches through inspect.signature, and "str"
    # slows every startswith in polars; fuzz/trace.dict gives the tokens instead.
    # Only ingest is instrumented: the checker's branches say nothing new.
    with atheris.instrument_imports(include=["ingest"]):
        from fuzz import targets
    targets.enable_feedback(atheris.instrument_func)

    def one(data: bytes) -> None:
        targets.fuzz_one(data, args.target)

    work = args.work / args.target
    targets.use_scratch_file(work / "input")
    if args.replay:
        for path in args.replay:
            out = targets.fuzz_one(path.read_bytes(), args.target)
            print(f"{path}: ok" + ("" if out is None else f" ({out.source.lines} lines)"))
        return 0

    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = [str(d) for d in targets.corpus_dirs(args.target) if d.is_dir()]
    flags = [
        f"-max_total_time={args.seconds}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={work}/",
        "-timeout=60",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
        f"-dict={DICT}",
        *args.libfuzzer,
    ]
    atheris.Setup([sys.argv[0], *flags, str(corpus), *seeds], one)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits the process


if __name__ == "__main__":
    sys.exit(main())
