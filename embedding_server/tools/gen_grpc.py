"""Regenerate the Python code of TEI's gRPC API from ``embedding_server/api/grpc/tei.proto``.

Run ``python -m embedding_server.tools.gen_grpc`` (or ``make grpc-code``) after changing the proto; it needs
grpcio-tools (the ``test`` extra). Writes ``tei_pb2.py``, ``tei_pb2.pyi`` and ``tei_pb2_grpc.py`` next to the proto,
the last with a package-relative import. ``--check`` compares instead of writing (exit status 1 on a difference).
This module is a separate tool: the serving code must not import it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "api" / "grpc"
PROTO = "tei.proto"
OUTPUTS = ("tei_pb2.py", "tei_pb2.pyi", "tei_pb2_grpc.py")


def generate(into: Path) -> dict[str, str]:
    """The generated files' text, by name, built in ``into``."""
    import grpc_tools
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(["grpc_tools.protoc", f"-I{PACKAGE}", f"-I{includes}", f"--python_out={into}",
                          f"--pyi_out={into}", f"--grpc_python_out={into}", str(PACKAGE / PROTO)])
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    files = {name: (into / name).read_text(encoding="utf-8") for name in OUTPUTS}
    # grpc_tools writes a top-level import; the package needs a relative one.
    files["tei_pb2_grpc.py"] = files["tei_pb2_grpc.py"].replace("import tei_pb2 as tei__pb2",
                                                                "from . import tei_pb2 as tei__pb2")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
    stale = [name for name, text in files.items()
             if not (PACKAGE / name).exists() or (PACKAGE / name).read_text(encoding="utf-8") != text]
    if args.check:
        for name in stale:
            print(f"{PACKAGE / name} differs from what {PROTO} generates", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        (PACKAGE / name).write_text(files[name], encoding="utf-8")
        print(f"wrote {PACKAGE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
