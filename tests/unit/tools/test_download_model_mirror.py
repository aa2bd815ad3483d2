"""download-model.sh end to end against a fake hub mirror on loopback (HF_ENDPOINT + HF_TOKEN)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "download-model.sh"
SHA = "c0ffee" + "0" * 34
FILES = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": b"safetensors-weights",
    "tokenizer.json": b'{"version": "1.0"}',
    "pytorch_model.bin": b"bin-weights",
    "1_Pooling/config.json": b'{"pooling_mode_cls_token": true}',
    "onnx/model.onnx": b"onnx",
    "colbert_linear.pt": b"colbert",
    "imgs/long.jpg": b"jpg",
}


class FakeMirror(BaseHTTPRequestHandler):
    """The few hub routes list_repo_files and snapshot_download use; records every request."""

    requests: list[tuple[str, str, str | None]] = []

    def log_message(self, *args):
        pass

    def _reply(self, body: bytes, headers: dict[str, str] | None = None, status: int = 200) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = unquote(urlparse(self.path).path)
        self.requests.append((self.command, path, self.headers.get("Authorization")))
        api = "/api/models/org/Some-Model/"
        resolve = f"/org/Some-Model/resolve/{SHA}/"
        if path.startswith(api + "tree/"):
            tree = [
                {"type": "file", "path": p, "oid": hashlib.sha1(b).hexdigest(), "size": len(b)}
                for p, b in FILES.items()
            ]
            self._reply(json.dumps(tree).encode(), {"Content-Type": "application/json"})
        elif path.startswith(api + "revision/"):
            info = {"id": "org/Some-Model", "sha": SHA, "siblings": [{"rfilename": p} for p in FILES]}
            self._reply(json.dumps(info).encode(), {"Content-Type": "application/json"})
        elif path.startswith(resolve) and path[len(resolve) :] in FILES:
            body = FILES[path[len(resolve) :]]
            self._reply(body, {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'})
        else:
            self._reply(b"{}", {"X-Error-Code": "EntryNotFound"}, status=404)

    do_HEAD = do_GET


@pytest.fixture
def mirror():
    FakeMirror.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_script_downloads_from_mirror_with_token(mirror, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EMBED_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=mirror,
        HF_TOKEN="hf_test_token",
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    dest = tmp_path / "models"
    result = subprocess.run(
        [str(SCRIPT), "org/Some-Model", "--revision", "v2", "--dest", str(dest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    local = dest / "some-model"
    got = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert got == ["1_Pooling/config.json", "colbert_linear.pt", "config.json", "model.safetensors", "tokenizer.json"]
    assert (local / "1_Pooling" / "config.json").read_bytes() == FILES["1_Pooling/config.json"]
    assert str(local) in result.stdout and "EMBED_MODEL=some-model make run" in result.stdout

    paths = [path for _, path, _ in FakeMirror.requests]
    assert "/api/models/org/Some-Model/tree/v2" in paths  # --revision reaches the hub
    assert not any(p.endswith(("pytorch_model.bin", ".onnx", ".jpg")) for p in paths)
    assert {auth for _, _, auth in FakeMirror.requests} == {"Bearer hf_test_token"}
