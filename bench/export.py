"""What a server download costs to prepare (`server.exports`): the first ask builds, later ones find it built.

    python -m bench.export --version runs/demo [--forms adapter,merged,gguf-f16,gguf-q8_0]

For each form, in one process and a scratch data dir, after one untimed merged export (imports, the page cache):
`tuneloom export` of the version into a folder (the baseline), then the server's build of the same form (that
export, zipped), then a second ask (cached).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, print_table, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=Path, required=True, help="a model-version directory")
    parser.add_argument("--forms", default="adapter,merged,gguf-f16,gguf-q8_0")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "export-build.json")
    args = parser.parse_args()

    from tuneloom.export import export_version
    from tuneloom.server.exports import Exports, Named, gguf_type_of
    from tuneloom.store.artifacts import Artifacts

    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        shutil.copytree(args.version, root / "model-versions" / "v")
        exports = Exports(Artifacts(root), b"bench" * 8, cache_bytes=2**62)  # no eviction while timed
        export_version(args.version, root / "warm-up", merged=True)  # untimed: imports and the page cache
        for form in args.forms.split(","):
            start = time.perf_counter()
            export_version(args.version, root / f"cli-{form}", merged=form == "merged", gguf_type=gguf_type_of(form))
            cli_s = time.perf_counter() - start
            named = Named("bench", "m", "v", form)
            start = time.perf_counter()
            packed = exports.packed(named, "model-versions/v")
            build_s = time.perf_counter() - start
            start = time.perf_counter()
            exports.packed(named, "model-versions/v")
            cached_ms = (time.perf_counter() - start) * 1000
            figures[form] = {
                "cli_export_s": cli_s,
                "build_s": build_s,
                "cached_ms": cached_ms,
                "zip_bytes": packed.size,
            }
    rows = [
        (
            form,
            f"{f['cli_export_s']:.1f}",
            f"{f['build_s']:.1f}",
            f"{f['cached_ms']:.2f}",
            f"{f['zip_bytes'] / 2**20:.1f}",
        )
        for form, f in figures.items()
    ]
    print_table("Server export builds", ["form", "tuneloom export s", "server build s", "cached ms", "zip MiB"], rows)
    write_result(args.out, benchmark="export", figures=figures, notes=f"version {args.version}")


if __name__ == "__main__":
    main()
