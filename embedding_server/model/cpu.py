"""What this CPU can do: the optional x86-64 features that some of the model layer's kernels need.

Every path that depends on one asks here first (and still falls back if the kernel then refuses), so a load or a
request never fails because the CPU lacks a feature:

- native bf16 products (``amx_bf16``, ``avx512_bf16``): ``auto`` picks bfloat16 only with them; without them
  bfloat16 still serves, emulated and slower (``precision.resolve_dtype``);
- oneDNN's blocked copies of bfloat16 weights (the short-batch copies): its bf16 reorder needs ``avx_ne_convert``
  or ``avx512bw`` + ``avx512vl`` + ``avx512dq`` and raises elsewhere (on AVX2-only CPUs).

``EMBED_CPU_FEATURES=avx2`` makes every probe answer as on an AVX2-only CPU (no AVX-512, AMX or AVX-NE-CONVERT):
the tests run the CPU-dependent paths both ways on any machine with it, and an operator can rule out a
CPU-specific kernel. It only narrows what the server chooses; torch's own dispatch is left as it is.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # in order of preference
BF16_REORDER_ANY = ("avx_ne_convert",)  # oneDNN reorders bf16 weights with this alone, or with all of the next
BF16_REORDER_ALL = ("avx512bw", "avx512vl", "avx512dq")
MODES = ("detect", "avx2")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's feature flags (as /proc/cpuinfo names them) and what they allow."""

    flags: frozenset[str]
    mode: str = "detect"  # "avx2": narrowed to an AVX2-only CPU's features

    @property
    def native_bf16(self) -> str | None:
        """The flag that gives native bf16 products, or None."""
        return next((flag for flag in NATIVE_BF16 if flag in self.flags), None)

    @property
    def bf16_blocked_weights(self) -> bool:
        """Whether oneDNN can reorder bfloat16 weights into its blocked layout on this CPU."""
        return any(f in self.flags for f in BF16_REORDER_ANY) or all(f in self.flags for f in BF16_REORDER_ALL)

    def describe(self) -> str:
        """One line for the log: the vector extensions and what the server does with them."""
        widest = next((f for f in ("avx512f", "avx2", "avx") if f in self.flags), "no avx")
        return (f"{widest}; native bf16: {self.native_bf16 or 'no'}; bf16 blocked weights: "
                f"{'yes' if self.bf16_blocked_weights else 'no'}"
                + (" (EMBED_CPU_FEATURES=avx2: narrowed to an AVX2-only CPU)" if self.mode == "avx2" else ""))

    def narrowed(self) -> CpuFeatures:
        """These features less everything an AVX2-only x86-64 CPU lacks."""
        return CpuFeatures(frozenset(f for f in self.flags if not f.startswith(("avx512", "amx", "avx_ne"))),
                           mode="avx2")


def read_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The ``flags`` of the first processor in ``cpuinfo``; asks torch when the file cannot be read."""
    try:
        flags = next((line.partition(":")[2].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    if not flags:  # no /proc/cpuinfo (macOS, a locked-down container): what torch can tell
        import torch

        probe = getattr(getattr(torch._C, "_cpu", None), "_is_avx512_bf16_supported", None)
        capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "")()
        flags = {"AVX2": ["avx2"], "AVX512": ["avx2", "avx512f", *BF16_REORDER_ALL]}.get(capability, [])
        if probe is not None and probe():
            flags.append("avx512_bf16")
    return frozenset(flags)


@functools.cache
def _detected() -> CpuFeatures:
    return CpuFeatures(read_flags())


def cpu_features(mode: str = "detect") -> CpuFeatures:
    """This CPU's features (read once), narrowed to an AVX2-only CPU's with ``mode="avx2"``."""
    if mode not in MODES:
        raise ValueError(f"cpu features mode {mode!r} is not one of {MODES}")
    features = _detected() if mode == "detect" else _detected().narrowed()
    _log_once(features)
    return features


@functools.cache
def _log_once(features: CpuFeatures) -> None:
    log.info("cpu: %s", features.describe())
