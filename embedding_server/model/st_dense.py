"""sentence-transformers ``Dense`` modules (``2_Dense/`` ...): a linear layer and an activation after pooling.

Some models (LaBSE, several multilingual and instruction models) project the pooled vector this way, and
their vectors are wrong without it. ``modules.json`` lists them in order; each folder holds ``config.json``
(``in_features``, ``out_features``, ``bias``, ``activation_function``) and the layer's weights
(``model.safetensors``, or ``pytorch_model.bin`` read with ``weights_only=True``). Activations are taken
from ``torch.nn`` only, as sentence-transformers does without ``trust_remote_code``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

_DEFAULT_ACTIVATION = "torch.nn.modules.activation.Tanh"  # sentence-transformers' default


def dense_folders(folder: Path) -> list[Path]:
    """The Dense module folders of a checkpoint, in the order modules.json applies them."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return []
    entries = json.loads(modules.read_text(encoding="utf-8"))
    return [folder / entry["path"] for entry in entries if str(entry.get("type", "")).endswith(".Dense")]


def _activation(path: str) -> torch.nn.Module:
    module_name, _, class_name = path.rpartition(".")
    if not module_name.startswith("torch.nn"):
        raise ValueError(f"activation {path!r} is not a torch.nn module")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"activation {path!r} is not a torch.nn module")
    return cls()


def load_dense(folder: Path) -> torch.nn.Sequential:
    """One Dense module: its linear layer (float32) followed by its activation."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    linear = torch.nn.Linear(int(config["in_features"]), int(config["out_features"]), bias=bool(config.get("bias", True)))
    linear.load_state_dict({key.removeprefix("linear."): value.float() for key, value in state.items()})
    activation = _activation(config.get("activation_function") or _DEFAULT_ACTIVATION)
    return torch.nn.Sequential(linear, activation).eval().requires_grad_(False)
