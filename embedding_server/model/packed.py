"""A padding-free forward pass for BERT-style encoders (BERT, RoBERTa, XLM-RoBERTa, ...).

The transformers forward pads every sequence of a batch to the longest one, and its dense
layers (about 95% of the arithmetic) then compute on padding too: a batch of 12- to
80-word sentences in arrival order spends ~40% of its time on padding tokens. Here the
tokens of all sequences are packed into one (tokens, hidden) matrix for the dense layers
and layer norms; only attention, which needs whole sequences, regroups them, in groups of
near-equal length so that its own padding stays small.

The same weight modules are used, so the vectors match the transformers forward to float
rounding; ``PackedEncoder.build`` checks that on the loaded model and declines otherwise.
Query, key and value projections are fused into one matrix, which the model's own modules
then view, so the fused copy costs no memory.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from .attention import Group, attend, attend_steps, plan_groups
from .cpu import CpuFeatures, cpu_features
from .dense import Dense, blocked_kernels_available, short_pass_padding, with_zero_rows
from .pages import release_file_pages
from .reranker import split_types
from .self_check import self_check
from .slicing import WHOLE, Slicing
from .standard import pad_batch, standard_forward  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


def _fuse(modules) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the Linear modules' weights and biases; the modules then hold views of the stack, and the
    originals' pages, if mapped from the checkpoint file, leave the resident set (see ``pages``)."""
    originals = [t.detach() for m in modules for t in (m.weight, m.bias)]
    weight = torch.cat([m.weight.detach() for m in modules]).contiguous()
    bias = torch.cat([m.bias.detach() for m in modules]).contiguous()
    release_file_pages(originals)
    row = 0
    for m in modules:
        n = m.weight.shape[0]
        m.weight = torch.nn.Parameter(weight[row:row + n], requires_grad=False)
        m.bias = torch.nn.Parameter(bias[row:row + n], requires_grad=False)
        row += n
    return weight, bias


class _Layer:
    """One encoder layer: fused query/key/value, attention output, feed-forward, two layer norms."""

    def __init__(self, layer):
        attention = layer.attention.self
        self.qkv = Dense(*_fuse([attention.query, attention.key, attention.value]))
        out = layer.attention.output
        self.out, self.norm1 = Dense(out.dense.weight.detach(), out.dense.bias.detach()), out.LayerNorm
        activation = layer.intermediate.intermediate_act_fn
        # transformers' exact GELU is computed by the product itself; any other activation runs after it.
        self.up = Dense(layer.intermediate.dense.weight.detach(), layer.intermediate.dense.bias.detach(),
                        gelu=_is_exact_gelu(activation))
        self.activation = None if self.up.gelu else activation
        self.down = Dense(layer.output.dense.weight.detach(), layer.output.dense.bias.detach())
        self.norm2 = layer.output.LayerNorm

    @property
    def dense(self) -> tuple[Dense, ...]:
        return self.qkv, self.out, self.up, self.down


def _is_exact_gelu(activation) -> bool:
    """Whether ``activation`` is transformers' exact (erf) GELU, which ``Dense`` can apply itself."""
    return getattr(activation, "act", None) is F.gelu or activation is F.gelu


def _supported(model) -> str | None:
    """Why this model cannot take the packed path, or None if it can."""
    config = model.config
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "decoder or cross-attention model"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position embeddings {config.position_embedding_type!r}"
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if getattr(model, "embeddings", None) is None or not layers:
        return "no embeddings/encoder.layer modules"
    try:
        for layer in layers:
            attention = layer.attention.self
            if not all(isinstance(m, torch.nn.Linear) and m.bias is not None
                       for m in (attention.query, attention.key, attention.value, layer.attention.output.dense,
                                 layer.intermediate.dense, layer.output.dense)):
                return "attention or feed-forward layers are not biased Linear modules"
            if not all(isinstance(m, torch.nn.LayerNorm) for m in (layer.attention.output.LayerNorm, layer.output.LayerNorm)):
                return "layer norms are not torch LayerNorm"
            layer.intermediate.intermediate_act_fn  # noqa: B018 - must exist
    except AttributeError as exc:
        return f"layer structure differs from BERT's ({exc})"
    return None


class PackedEncoder:
    """Runs a loaded BERT-style ``AutoModel`` on packed tokens; returns the packed last hidden state."""

    def __init__(self, model, wants_token_types: bool):
        config = model.config
        self.embeddings = model.embeddings
        self.layers = [_Layer(layer) for layer in model.encoder.layer]
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.wants_token_types = wants_token_types
        # Token types are always passed (zeros): left out, transformers 4.x slices a buffer of
        # max_position_embeddings rows, which a packed batch of more tokens overruns.
        self.token_types = getattr(model.embeddings, "token_type_embeddings", None) is not None
        # RoBERTa-style embeddings number real tokens from padding_idx + 1, skipping pad ids; BERT's from 0.
        padding_idx = getattr(model.embeddings, "padding_idx", None)
        self.padding_idx = None if padding_idx is None else int(padding_idx)

    @property
    def dense_bytes(self) -> int:
        """Memory taken by the dense layers' weights (one copy)."""
        return sum(d.nbytes for layer in self.layers for d in layer.dense)

    @property
    def short_batch_copy(self) -> bool:
        """Whether short forward passes use blocked copies of the dense weights."""
        return all(d.blocked is not None for layer in self.layers for d in layer.dense)

    @classmethod
    def build(cls, model, wants_token_types: bool, pad_id: int, short_copy_bytes: int = 0,
              cpu: CpuFeatures | None = None) -> PackedEncoder | None:
        """A packed forward for ``model`` if its structure allows one and it reproduces the standard
        forward on test batches; else None (the caller keeps the transformers forward).

        With dense weights of at most ``short_copy_bytes``, short passes get oneDNN blocked copies, where the
        ``cpu`` (default: this one's features) can make them for the weights' dtype.
        """
        reason = _supported(model)
        if reason is None:
            packed = cls(model, wants_token_types)
            if 0 < packed.dense_bytes <= short_copy_bytes and blocked_kernels_available():
                packed._add_short_copies(cpu or cpu_features())
            try:
                reason = self_check(packed, model, pad_id)
            except Exception as exc:  # noqa: BLE001 - any failure means: keep the standard forward
                reason = f"self-check failed: {type(exc).__name__}: {exc}"
            if reason is None:
                return packed
        log.info("padding-free forward not used for %s: %s", type(model).__name__, reason)
        return None

    def _add_short_copies(self, cpu: CpuFeatures) -> None:
        """Blocked copies of every dense weight if the CPU allows them for their dtype and they check out; else
        none (a kernel that refuses despite the probe falls back the same way). One log line says which."""
        dtype = self.layers[0].qkv.weight.dtype
        if dtype == torch.bfloat16 and not cpu.bf16_blocked_weights:
            log.info("short-batch weight copies not made: this CPU cannot reorder bfloat16 weights for oneDNN "
                     "(needs avx_ne_convert, or avx512bw, avx512vl and avx512dq); short passes use the default "
                     "product")
            return
        try:
            for layer in self.layers:
                for dense in layer.dense:
                    dense.add_blocked_copy()
        except RuntimeError as exc:
            log.info("short-batch weight copies not used (%s): %s", str(dtype).removeprefix("torch."),
                     " ".join(str(exc).split())[:300])
            for layer in self.layers:
                for dense in layer.dense:
                    dense.blocked = None
            return
        log.info("short-batch weight copies made (%s, %.0f MB)", str(dtype).removeprefix("torch."),
                 self.dense_bytes / 2**20)

    def forward(self, batch: list[list[int]], slicing: Slicing = WHOLE) -> torch.Tensor:
        """Last hidden state of every real token: (sum of lengths, hidden), sequences in ``batch`` order."""
        steps = self.steps(batch, slicing)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def steps(self, batch: list[list[int]], slicing: Slicing = WHOLE):
        """Generator form of ``forward``: yields between units of work of bounded size, returns the hidden
        states. State between units is the packed hidden-state matrix; dense work runs on chunks of at most
        ``slicing.rows`` tokens, attention on blocks of at most ``slicing.pairs`` (query, key) pairs."""
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        lengths = [len(batch[i]) for i in order]
        starts = np.cumsum([0, *lengths]).tolist()  # each sorted sequence's first row in the packed matrix
        x = self._embed([batch[i] for i in order], lengths, starts)
        total = x.shape[0]
        groups = plan_groups(lengths)
        rows = total if slicing.rows is None else max(int(slicing.rows), 1)
        whole = rows >= total and not any(g.count * g.longest ** 2 > slicing.pairs for g in groups)
        # A short pass gets its padding rows for the blocked kernels once, not in each of its products.
        extra = short_pass_padding(total) if whole and self.short_batch_copy else 0
        x = with_zero_rows(x, extra)
        for layer in self.layers:
            yield
            if whole:
                x = self._layer(layer, x, groups)
            else:
                yield from self._layer_in_chunks(layer, x, groups, rows, slicing)
        if extra:
            x = x[:total]
        if order != sorted(order):  # back to the caller's sequence order
            position = {seq: k for k, seq in enumerate(order)}
            index = torch.cat([torch.arange(starts[position[i]], starts[position[i] + 1]) for i in range(len(batch))])
            x = x.index_select(0, index)
        return x

    def _embed(self, batch: list[list[int]], lengths: list[int], starts: list[int]) -> torch.Tensor:
        """The embedding layer on the packed tokens: (sum of lengths, hidden), no padding rows. Each token's
        position is passed explicitly, computed as transformers does: its index in its sequence for BERT;
        for RoBERTa-style embeddings, padding_idx + its count of non-pad tokens so far (a pad id inside an
        input gets padding_idx and is not counted). The padded layout took 12 MB per intermediate of that
        module with a 256-token input among 31 short ones."""
        total = starts[-1]
        module = self.embeddings
        ids = np.fromiter((t for seq in batch for t in seq), dtype=np.int64, count=total)
        ids, types = split_types(ids, module.word_embeddings.num_embeddings)  # a reranker's pairs carry types
        first = np.asarray(starts[:-1], dtype=np.int64)
        if self.padding_idx is None:
            positions = np.arange(total, dtype=np.int64) - np.repeat(first, lengths)
        else:
            real = (ids != self.padding_idx).astype(np.int64)
            counted = np.cumsum(real)
            before = counted[first] - real[first]  # real tokens before each sequence
            positions = (counted - np.repeat(before, lengths)) * real + self.padding_idx
        # The embedding module's own sum and layer norm, in float32 whatever the weights' dtype (the residual
        # stream stays float32 in every layer; see precision.py).
        rows = getattr(module.word_embeddings, "float_rows", module.word_embeddings)  # float32 rows from the file
        x = rows(torch.from_numpy(ids)).float()
        if self.token_types and types is not None:
            x += module.token_type_embeddings(torch.from_numpy(types)).float()
        elif self.token_types:
            x += module.token_type_embeddings.weight[0].float()  # every token's type is 0
        x += module.position_embeddings(torch.from_numpy(positions)).float()
        norm = module.LayerNorm
        return F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)

    def _layer(self, layer: _Layer, x: torch.Tensor, groups: list[Group]) -> torch.Tensor:
        """One layer on the whole matrix at once (the fastest form when no slicing is needed). Rows of ``x`` past
        the groups' are padding (see ``steps``): attention leaves them out, the per-token rest computes them."""
        attended = attend(layer.qkv(x), groups, self.heads)
        return self._tail(layer, with_zero_rows(attended, x.shape[0] - attended.shape[0]), x)

    def _tail(self, layer: _Layer, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attention output projection, feed-forward and both layer norms; each token independently."""
        hidden = self.hidden
        # The products' outputs are fresh tensors, so the residual adds (and the exact GELU, see Dense) write into
        # them (same values, ~11 MB less allocated per layer for 1,200 tokens; query p95 during a 2,048-input
        # request -12%).
        # ``x``, the residual stream, is float32; with bfloat16 weights the products' outputs are added to it in
        # float32, and the layer norms run in float32.
        x = F.layer_norm(_residual(layer.out(attended), x), (hidden,), layer.norm1.weight, layer.norm1.bias,
                         layer.norm1.eps)
        up = layer.up(x)
        if layer.activation is not None:
            up = layer.activation(up)
        return F.layer_norm(_residual(layer.down(up), x), (hidden,), layer.norm2.weight, layer.norm2.bias,
                            layer.norm2.eps)

    def _layer_in_chunks(self, layer: _Layer, x: torch.Tensor, groups: list[Group], rows: int, slicing: Slicing):
        """One layer in units of bounded cost, updating ``x`` in place: query/key/value over chunks of
        ``rows`` tokens, attention in blocks, then the per-token rest over chunks (once attention is done,
        no token reads another's row, so each chunk overwrites its own rows)."""
        total = x.shape[0]
        qkv = x.new_empty(total, 3 * self.hidden, dtype=layer.qkv.weight.dtype)
        for start in range(0, total, rows):
            layer.qkv.into(x[start:start + rows], qkv[start:start + rows])
            yield
        attended = yield from attend_steps(qkv, groups, self.heads, slicing.pairs, slicing.block_rows)
        del qkv
        for start in range(0, total, rows):
            part = slice(start, start + rows)
            x[part] = self._tail(layer, attended[part], x[part])
            yield


def _residual(product: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``product + x`` in ``x``'s dtype (float32), written into the product when the dtypes agree."""
    return product.add_(x) if product.dtype == x.dtype else product.float().add_(x)
