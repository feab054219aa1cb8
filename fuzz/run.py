"""Run one fuzz target under libFuzzer: `python -m fuzz.run [--seconds N | --runs N] TARGET`.

The committed seeds in `fuzz/corpus/TARGET/` are read but never written: new inputs go to
$TMPDIR/tuneloom-fuzz/TARGET/corpus (or `--corpus DIR`), kept across runs. A crash leaves its input in
`--artifacts` (default: $TMPDIR/tuneloom-fuzz/TARGET/crashes) and the path on stderr;
`--replay FILE…` runs files through the target in plain Python, with the full traceback, to debug one.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

SEEDS = Path(__file__).parent / "corpus"
Target = Callable[[bytes], None]


def load_target(name: str) -> Target | None:
    """Import the targets with tuneloom's bytecode instrumented, so libFuzzer sees its coverage.

    Settings validation and the tokenizer import transformers and peft lazily; that happens here, before the first
    input, so the import time does not count against an input's timeout.
    """
    with atheris.instrument_imports(include=["tuneloom"]):
        from fuzz import data_targets, settings_targets
    if name in ("settings", "settings_json"):
        settings_targets.warm_up()
    if name == "tokenized":
        data_targets.tokenizer()
    return {**data_targets.TARGETS, **settings_targets.TARGETS}.get(name)


RSS_LIMIT_MB = 2048


def count_own_memory() -> None:
    """Go on in a forked child when this process starts out charged with its parent's peak memory.

    Linux carries a parent's peak RSS across exec into the child's `getrusage` figure, which libFuzzer's
    `-rss_limit_mb` reads as this process's own: started by a pytest worker that had loaded a model
    (2.4 GB), every target was "out of memory" at its first input. A forked child counts from its own
    pages; this process waits for it and exits as it did.
    """
    if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < RSS_LIMIT_MB * 1024 // 2:  # kB
        return
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        return
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    os._exit(code if code >= 0 else 128 - code)  # a signal's death as the shell reports it


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "target", help="lines, sections, csv, jsonl, sniff, validate, tokenized, settings, settings_json, params"
    )
    parser.add_argument("--seconds", type=int, default=60, help="stop after this long (default 60)")
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many executions")
    parser.add_argument("--max-len", type=int, default=4096, help="largest input in bytes (default 4096)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--corpus", type=Path, help="directory to keep the grown corpus in")
    parser.add_argument("--artifacts", type=Path, help="directory for crash reproducers")
    parser.add_argument("--replay", type=Path, nargs="+", help="run these inputs once, without libFuzzer")
    args = parser.parse_args(argv)
    count_own_memory()
    target = load_target(args.target)
    if target is None:
        parser.error(f"unknown target {args.target!r}")
    if args.replay:
        for path in args.replay:
            target(path.read_bytes())
            print(f"{path}: ok")
        return
    # One stable place per target (libFuzzer exits without cleanup, so no fresh temp dirs); the corpus
    # there grows from run to run.
    home = Path(tempfile.gettempdir()) / "tuneloom-fuzz" / args.target
    corpus = args.corpus or home / "corpus"
    artifacts = args.artifacts or home / "crashes"
    for folder in (corpus, artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS / args.target
    libfuzzer = [
        sys.argv[0],
        str(corpus),
        *([str(seeds)] if seeds.is_dir() else []),
        f"-artifact_prefix={artifacts}/",
        f"-max_total_time={args.seconds}",
        f"-runs={args.runs}",
        f"-max_len={args.max_len}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        "-print_final_stats=1",
    ]
    atheris.Setup(libfuzzer, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
