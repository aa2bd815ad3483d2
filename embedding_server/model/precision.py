"""The weights' dtype: float32, or bfloat16 where the CPU computes it natively.

bfloat16 halves the weights' memory, and on CPUs with native bf16 instructions (AVX-512 BF16 on AMD Zen 4 and
Intel Cooper Lake and later, AMX on Sapphire Rapids and later) runs matrix products about twice as fast. What
accuracy needs stays float32: layer norms (their parameters and arithmetic), softmax, the residual stream of the
padding-free forward, pooling and normalisation; responses are float32 vectors.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(requested: str, native: str | None) -> tuple[str, str]:
    """(dtype to load, why) for a requested ``float32``, ``bfloat16`` or ``auto`` on a CPU with ``native`` bf16."""
    if requested == "auto":
        if native:
            return "bfloat16", f"auto: this CPU has {native}"
        return "float32", "auto: this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"
    if requested == "bfloat16" and not native:
        return "bfloat16", "requested; this CPU has no native bf16, so bf16 products are emulated and slower than float32"
    return requested, "requested"


class Float32LayerNorm(torch.nn.LayerNorm):
    """A LayerNorm with float32 parameters that computes in float32 whatever its input, and answers in the input's
    dtype: the transformers forward of a bfloat16 model keeps its layer norms exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


def keep_layer_norms_in_float32(model: torch.nn.Module) -> int:
    """Turn every LayerNorm of a low-precision ``model`` into a ``Float32LayerNorm`` (its parameters cast to float32,
    a few KB each); the number changed."""
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.LayerNorm and module.weight is not None and module.weight.dtype != torch.float32:
            module.weight = torch.nn.Parameter(module.weight.detach().float(), requires_grad=False)
            if module.bias is not None:
                module.bias = torch.nn.Parameter(module.bias.detach().float(), requires_grad=False)
            module.__class__ = Float32LayerNorm
            changed += 1
    return changed
