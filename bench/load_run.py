"""Standalone soak/load run: the robustness suite's mixed valid/invalid load, for as long as you like.

    python -m bench.load_run --seconds 600 --clients 16                  # starts its own server (embedded MiniLM)
    python -m bench.load_run --url http://127.0.0.1:8000 --pid 1234      # an already running server (pid: RSS)

Every answer is checked (vectors against ones computed up front, statuses and error shapes of invalid
requests); the exit status is 1 if any answer was lost, mismatched or a 5xx, or the RSS the server keeps
once idle grew faster than --max-growth-rate MB/s (median over the run's --parts; after a 15 s warm-up the
load pauses for a few seconds after each part). Loopback only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.robustness.soak_load import expected_for, text_pool
from tests.integration.robustness.soak_run import run_soak
from tests.support.server import running_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="base URL of a running server (default: start one on a free loopback port)")
    parser.add_argument("--pid", type=int, help="the running server's pid, to sample its RSS")
    parser.add_argument("--models-dir", type=Path, help="EMBED_MODELS_DIR for the started server (default: empty)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--pool", type=int, default=64, help="texts in the fixed pool")
    parser.add_argument("--parts", type=int, default=4, help="parts of the run, each followed by an idle pause")
    parser.add_argument("--max-growth-rate", type=float, default=0.5,
                        help="MB/s: most growth of the RSS kept once idle, median over the parts")
    args = parser.parse_args(argv)

    if args.url and not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("--url must be a loopback address")
    scratch = tempfile.TemporaryDirectory() if not args.url else nullcontext(None)
    with scratch as tmp:
        if args.url:
            server = nullcontext((args.url.rstrip("/"), None))
        else:
            models = args.models_dir or Path(tmp)
            server = running_server(models, log_path=Path(tmp) / "server.log")
        with server as (base, proc):
            pid = args.pid or (proc.pid if proc is not None else None)
            print(f"load: {base} for {args.seconds:.0f}s with {args.clients} clients (server pid {pid})", flush=True)
            soak = run_soak(base, expected_for(base, text_pool(args.pool)), seconds=args.seconds,
                            clients=args.clients, pid=pid, parts=args.parts)
    print("\n".join(soak.lines()))
    rate = soak.growth_rate
    ok = soak.server_errors == 0 and not soak.problem_count and (rate is None or rate < args.max_growth_rate)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
