"""Command line: ``embedding-server serve [--models-dir D] [--model NAME] [--host H] [--port P] [--grpc-port G]`` and
``embedding-server embed INPUT [--column C] [--id-column I] [--model M] [--out PATH] [--url URL]``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from .settings import Settings, unknown_environment


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedding-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API (flags override EMBED_* settings)")
    serve.add_argument("--models-dir", dest="models_dir", help="folder of model folders (EMBED_MODELS_DIR)")
    serve.add_argument("--model", help="default model name (EMBED_MODEL)")
    serve.add_argument("--host", help="listen address (EMBED_HOST)")
    serve.add_argument("--port", type=int, help="listen port (EMBED_PORT)")
    serve.add_argument("--grpc-port", dest="grpc_port", type=int, help="also serve TEI's gRPC API on this port "
                       "(EMBED_GRPC_PORT)")
    embed = sub.add_parser("embed", help="embed a dataset (CSV, JSON Lines, Parquet or text) into a vector file",
                           description="Embed every row of INPUT into OUT (.npy + .ids.json, .parquet or .jsonl). "
                           "In-process by default (EMBED_* settings apply); with --url, through a running server. "
                           "Rerun the same command after an interruption to continue where it stopped.")
    embed.add_argument("input", help="CSV/TSV, JSON Lines, Parquet, or plain text (one input per line)")
    embed.add_argument("--column", default="text", help="the text column (default: text)")
    embed.add_argument("--id-column", dest="id_column", help="the id column (default: the row number)")
    embed.add_argument("--model", help="model name (default: EMBED_MODEL / the server's default)")
    embed.add_argument("--out", help="output file: .npy, .parquet or .jsonl (default: INPUT's name + .npy)")
    embed.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (API key from EMBED_API_KEY)")
    embed.add_argument("--api", choices=["ollama", "openai"], default="ollama", help="the server's dialect to use")
    embed.add_argument("--strict", action="store_true", help="refuse empty rows instead of skipping them")
    embed.add_argument("--models-dir", dest="models_dir", help="in-process: folder of model folders")
    cluster = embed.add_argument_group("on a Ray cluster (pip install 'embedding-server[ray]'; docs/scaling.md)")
    cluster.add_argument("--ray", action="store_true", help="run on Ray Data: INPUT a file or folder, OUT a Parquet "
                         "dataset folder; local paths or URIs (s3://, gs://, hdfs://)")
    cluster.add_argument("--ray-address", dest="ray_address", help="join this cluster (auto, ray://HOST:10001); "
                         "default: start a local Ray instance")
    cluster.add_argument("--concurrency", type=int, help="actors, each loading the model once (default: the "
                         "cluster's CPUs / --cpus-per-actor)")
    cluster.add_argument("--cpus-per-actor", dest="cpus_per_actor", type=float, default=1.0,
                         help="CPUs (torch threads) per actor (default: 1)")
    cluster.add_argument("--batch-size", dest="batch_size", type=int, default=1024, help="rows per batch (default: "
                         "1024)")
    cluster.add_argument("--outputs", help="dense,sparse,colbert: BGE-M3's heads as columns (default: dense)")
    return parser


def embed_command(args: argparse.Namespace) -> int:
    """``embedding-server embed``: exit 0 when done, 1 with one line on a usage or data problem, 130 on Ctrl-C."""
    import asyncio
    from pathlib import Path

    from .indexing.backends import InProcess, Remote
    from .indexing.run import index
    from .indexing.sources import SourceError
    from .indexing.store import OUTPUTS

    if args.ray:
        from .indexing.ray_run import ray_command

        return ray_command(args)
    if args.ray_address or args.concurrency or args.outputs:
        print("embedding-server embed: --ray-address, --concurrency and --outputs go with --ray", file=sys.stderr)
        return 1
    source = Path(args.input)
    out = Path(args.out) if args.out else source.with_suffix(".npy")
    if out.suffix.lower() not in OUTPUTS:
        print(f"embedding-server embed: --out must end in {', '.join(OUTPUTS)}", file=sys.stderr)
        return 1
    if not source.is_file():
        print(f"embedding-server embed: {source}: no such file", file=sys.stderr)
        return 1
    settings = Settings(**({"models_dir": args.models_dir} if args.models_dir else {}))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    backend = (Remote(args.url, args.model, args.api, (settings.api_keys or [None])[0]) if args.url
               else InProcess(settings, args.model))

    async def run():
        try:
            return await index(source, out, backend, args.column, args.id_column, args.strict)
        finally:
            await backend.close()

    try:
        summary = asyncio.run(run())
    except KeyboardInterrupt:
        print("embedding-server embed: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except (SourceError, ValueError, RuntimeError, OSError) as exc:
        print(f"embedding-server embed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - engine errors (unknown model...): one line
        print(f"embedding-server embed: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1
    print(f"{summary.rows} vectors -> {out} ({summary.skipped} empty rows skipped, {summary.seconds:.1f} s, "
          f"{summary.rows_per_second:.0f} rows/s{f', {summary.resumed_chunks} chunks resumed' if summary.resumed_chunks else ''})",
          file=sys.stderr)
    return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the flags that were given layered on top."""
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    return Settings(**overrides)


def check_default_model(settings: Settings) -> str | None:
    """One line saying why the default model cannot be served, or None if its folder looks right."""
    from .engine.errors import ModelNotFound
    from .engine.registry import ModelRegistry, discover

    # Scan quietly: the server's own scan logs each unusable folder once, and when the default is one of
    # them the caller prints the single line that says so.
    scan_log = logging.getLogger("embedding_server.engine.registry")
    was_disabled, scan_log.disabled = scan_log.disabled, True
    try:
        entries = discover(settings.models_dir)
    finally:
        scan_log.disabled = was_disabled
    registry = ModelRegistry(entries, settings.aliases)
    try:
        entry = registry.resolve(settings.model)
    except ModelNotFound:
        names = ", ".join(sorted(registry.entries)) or "none"
        return (f"default model '{settings.model}' not found in {settings.models_dir} (models found: {names}); "
                f"run ./download-model.sh {settings.model} or set EMBED_MODEL")
    return entry.error


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "embed":
        return embed_command(args)
    try:
        settings = settings_from_args(args)
    except Exception as exc:  # pydantic's ValidationError: one readable line, no traceback
        print(f"embedding-server: invalid settings: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in unknown_environment(dict(os.environ)):
        logging.getLogger("embedding_server").warning("%s is not a setting and is ignored (see the README's "
                                                      "Settings table)", name)
    problem = check_default_model(settings)
    if problem:
        print(f"embedding-server: cannot start: {problem}", file=sys.stderr)
        return 1

    import uvicorn

    from .app import create_app

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                                           timeout_graceful_shutdown=30, access_log=False))  # our JSON access log
    # A default model that fails to load (after its files looked right) stops the server: exit 1.
    app.state.on_fatal = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises the SIGTERM/SIGINT that stopped it once its graceful shutdown is over; with the
    # default dispositions that kills the process (status -15/143) and the status below is never returned.
    # A requested stop is a clean exit: 0, or 1 if the default model failed.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 1 if getattr(app.state, "load_error", None) else 0


if __name__ == "__main__":
    sys.exit(main())
