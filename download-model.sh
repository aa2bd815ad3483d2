#!/usr/bin/env bash
# Download an embedding or reranker model from the Hugging Face hub into models/<name>/ for offline serving.
#
#   ./download-model.sh bge-m3|all-minilm-l6-v2|bge-reranker-v2-m3|ms-marco-minilm-l6-v2|<org>/<repo> [--revision R] [--dest DIR]
#
# Only the files serving needs are fetched (see embedding_server/tools/download.py).
# HF_ENDPOINT (hub mirror) and HF_TOKEN (gated/private repos) are honoured as set.
# Run `./download-model.sh --help` for details.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -x "$here/.venv/bin/python" ]]; then
    python="$here/.venv/bin/python"
elif command -v python3 >/dev/null 2>&1; then
    python="python3"
else
    echo "error: no python found (run \`make install\` first)" >&2
    exit 1
fi

# Make the tool importable from a plain checkout too (no `pip install -e .` needed).
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m embedding_server.tools.download "$@"
