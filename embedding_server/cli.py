"""Command line: ``embedding-server serve [--models-dir D] [--model NAME] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedding-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API (flags override EMBED_* settings)")
    serve.add_argument("--models-dir", dest="models_dir", help="folder of model folders (EMBED_MODELS_DIR)")
    serve.add_argument("--model", help="default model name (EMBED_MODEL)")
    serve.add_argument("--host", help="listen address (EMBED_HOST)")
    serve.add_argument("--port", type=int, help="listen port (EMBED_PORT)")
    return parser


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
    try:
        settings = settings_from_args(args)
    except Exception as exc:  # pydantic's ValidationError: one readable line, no traceback
        print(f"embedding-server: invalid settings: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
