"""Command line: ``embedding-server serve [--models-dir D] [--model NAME] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import logging
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

    registry = ModelRegistry(discover(settings.models_dir, settings.model), settings.aliases, settings.model)
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
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=30, access_log=False)  # our own JSON access log replaces uvicorn's
    return 1 if getattr(app.state, "load_error", None) else 0


if __name__ == "__main__":
    sys.exit(main())
