"""Model layer: checkpoint folders, tokenisation, forward pass and pooling. No HTTP here.

Importing this package switches the Hugging Face libraries to offline mode for the whole
process: the service only ever loads local folders and must never try the network.
"""

import os

for _switch in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_switch] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
