"""The cost of the extra hop: /predict on a generation node directly vs through a `--backend remote` server.

One tiny-random version fine-tuned through the API, then one generation node (`serve --workers 0
--advertise-url`) and one API server (`serve --workers 0 --backend remote`) on the same data dir and
database. The same load (C clients, each sending R /predict requests back to back, 1 input, ≤ T new
tokens, greedy) runs against the node, then through the API server, then against the node again, so
that a drift of the machine shows. Both processes share this machine's cores: on separate machines
the relay costs the node nothing, so the ratio here is a lower bound.

    python -m bench.serve_remote                 # 32 clients × 8 requests, 16 new tokens
    python -m bench.serve_remote --requests 2    # a quick smoke run
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import RESULTS_DIR, print_table, write_result
from bench.serve import NO_KEY_CAP, load_arguments, trained_version, warm_and_load
from bench.server_process import free_port, start_server, stop


def main() -> None:
    args = load_arguments(__doc__, RESULTS_DIR / "serve-remote.json")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-remote-") as tmp:
        data_dir = Path(tmp)
        key = trained_version(data_dir, args.template)
        port = free_port()
        node, node_url = start_server(
            data_dir, "--workers", "0", "--advertise-url", f"http://127.0.0.1:{port}", *NO_KEY_CAP, port=port
        )
        front, front_url = start_server(data_dir, "--workers", "0", "--backend", "remote", *NO_KEY_CAP)
        try:
            direct = warm_and_load(node_url, key, args)
            relayed = warm_and_load(front_url, key, args)
            direct_again = warm_and_load(node_url, key, args)
        finally:
            stop(front)
            stop(node)
    best_direct = max(direct["predictions_per_s"], direct_again["predictions_per_s"])
    figures = {
        "model": "tiny-random (fine-tuned here)",
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "node_directly": direct,
        "through_remote_server": relayed,
        "node_directly_again": direct_again,
        "relayed_over_best_direct": relayed["predictions_per_s"] / best_direct,
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
    }
    title = f"/predict, {args.clients} clients × {args.requests} requests, ≤{args.max_tokens} new tokens (CPU)"
    rows = [
        [name, f"{r['predictions_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}"]
        for name, r in (("node directly", direct), ("through --backend remote", relayed), ("node again", direct_again))
    ]
    rows.append(["relayed / best direct", f"{figures['relayed_over_best_direct']:.2f}×", "", ""])
    print_table(title, ["path", "predictions/s", "p50 ms", "p99 ms"], rows)
    write_result(args.out, benchmark="serve_remote", figures=figures, device="cpu", libraries=("tuneloom", "httpx"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
