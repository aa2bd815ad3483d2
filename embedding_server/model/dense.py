"""Dense (linear) layers of the padding-free forward, with a faster kernel for short inputs.

A single query is only ~10-20 tokens, so each matrix product reads a whole weight matrix for
a handful of rows and is limited by memory traffic. oneDNN with the weight reordered once
into its blocked layout runs those short products ~30% faster than the default (MKL) path
on an AVX2 CPU, but is slower on long ones. So a layer can keep a second, blocked copy of its
weight and use it for inputs of at most ``SHORT_TOKENS`` rows; the copy costs the weight's size
in memory, which is why the caller decides whether to make it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SHORT_TOKENS = 128  # rows (packed tokens) up to which the blocked copy is used
# oneDNN compiles and caches one kernel per input row count (~0.35 MB each, four weight shapes per
# model): with every count from 1 to 128, the 60 s mixed-load soak test's RSS grew 111 MB in its second
# half (17 MB with this). Inputs are padded with zero rows to a multiple of this, so at most 4 x 16
# kernels exist.
ROW_BUCKET = 8


def short_pass_padding(rows: int) -> int:
    """Zero rows to add to a pass of ``rows`` tokens so that its products need none (see ROW_BUCKET); 0 for a
    pass too long for the blocked copies."""
    return -rows % ROW_BUCKET if rows <= SHORT_TOKENS else 0


def with_zero_rows(x: torch.Tensor, extra: int) -> torch.Tensor:
    """``x`` (rows, features) followed by ``extra`` rows of zeros."""
    return torch.cat([x, x.new_zeros(extra, x.shape[1])]) if extra else x


def blocked_kernels_available() -> bool:
    """Whether this torch build has the oneDNN prepacked-linear operators."""
    try:
        ops = torch.ops.mkldnn
        return bool(torch.backends.mkldnn.is_available()) and all(
            hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


class Dense:
    """``y = x @ weight.T + bias`` on a (rows, features) input, followed by the exact (erf) GELU if ``gelu``.

    The blocked kernel applies the GELU to the product before writing it (a oneDNN post-op), which saves a pass
    over the output: 10-15 us per feed-forward layer of a short pass (six per MiniLM query)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, gelu: bool = False):
        self.weight, self.bias, self.gelu = weight, bias, gelu
        self.blocked: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def add_blocked_copy(self) -> None:
        """Reorder a copy of the weight for oneDNN and check it gives the same products.

        Raises RuntimeError if the operators are missing or disagree with the default path.
        """
        if self.weight.dtype not in (torch.float32, torch.bfloat16):
            raise RuntimeError(f"blocked copy needs float32 or bfloat16 weights, not {self.weight.dtype}")
        blocked = torch.ops.mkldnn._reorder_linear_weight(self.weight, SHORT_TOKENS)
        probe = torch.randn(8, self.weight.shape[1], generator=torch.Generator().manual_seed(0)).to(self.weight.dtype)
        expected = F.linear(probe, self.weight, self.bias).float()
        if self.gelu:
            expected = F.gelu(expected)
        got = _blocked_linear(probe, blocked, self.bias, self.gelu).float()
        tolerance = 1e-4 if self.weight.dtype == torch.float32 else 2e-2
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=tolerance, atol=tolerance):
            raise RuntimeError("oneDNN blocked weights disagree with the default linear")
        self.blocked = blocked

    def into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``self(x)`` written into ``out`` (rows of a larger matrix: no copy of the product)."""
        torch.addmm(self.bias, x.to(self.weight.dtype), self.weight.t(), out=out)
        return torch.ops.aten.gelu_(out) if self.gelu else out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The product in the weight's dtype (a float32 input is cast to bfloat16 weights' dtype first)."""
        x = x.to(self.weight.dtype)
        rows = x.shape[0]
        if self.blocked is None or rows > SHORT_TOKENS:
            out = F.linear(x, self.weight, self.bias)
            return torch.ops.aten.gelu_(out) if self.gelu else out
        extra = short_pass_padding(rows)
        out = _blocked_linear(with_zero_rows(x, extra), self.blocked, self.bias, self.gelu)
        return out[:rows] if extra else out


def _blocked_linear(x: torch.Tensor, blocked: torch.Tensor, bias: torch.Tensor, gelu: bool) -> torch.Tensor:
    """The oneDNN product with the blocked weight, and the exact GELU as its post-op if ``gelu``."""
    if gelu:
        return torch.ops.mkldnn._linear_pointwise(x, blocked, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, blocked, bias, "none", [], "")
