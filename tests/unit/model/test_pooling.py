"""pool() and normalize() against values computed by hand on small padded tensors."""

from __future__ import annotations

import math

import pytest
import torch

from embedding_server.model.pooling import POOLING_MODES, normalize, pool

# batch 2, seq 3, dim 2. Row 0 has three real tokens; row 1 two real tokens and one pad
# whose (huge) values must never leak into any pooled vector.
HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, -4.0], [5.0, 0.0]],
        [[-2.0, 6.0], [4.0, -8.0], [100.0, 100.0]],
    ]
)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_mean_ignores_padding():
    out = pool(HIDDEN, MASK, "mean")
    expected = torch.tensor([[(1 + 3 + 5) / 3, (2 - 4 + 0) / 3], [(-2 + 4) / 2, (6 - 8) / 2]])
    torch.testing.assert_close(out, expected)


def test_mean_sqrt_len_divides_by_root_of_length():
    out = pool(HIDDEN, MASK, "mean_sqrt_len")
    expected = torch.tensor([[9 / math.sqrt(3), -2 / math.sqrt(3)], [2 / math.sqrt(2), -2 / math.sqrt(2)]])
    torch.testing.assert_close(out, expected)


def test_cls_takes_first_position():
    out = pool(HIDDEN, MASK, "cls")
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [-2.0, 6.0]]))


def test_max_ignores_padding():
    out = pool(HIDDEN, MASK, "max")
    torch.testing.assert_close(out, torch.tensor([[5.0, 2.0], [4.0, 6.0]]))


def test_max_with_all_negative_values_and_padding():
    hidden = torch.tensor([[[-3.0, -1.0], [-2.0, -5.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # The pad's zeros are larger than every real value: they must not win.
    torch.testing.assert_close(pool(hidden, mask, "max"), torch.tensor([[-2.0, -1.0]]))


def test_lasttoken_right_padding():
    out = pool(HIDDEN, MASK, "lasttoken")
    torch.testing.assert_close(out, torch.tensor([[5.0, 0.0], [4.0, -8.0]]))


def test_lasttoken_left_padding():
    hidden = torch.tensor(
        [
            [[9.0, 9.0], [9.0, 9.0], [1.0, 2.0]],  # two pads on the left, one real token
            [[7.0, 7.0], [3.0, 4.0], [5.0, 6.0]],  # one pad on the left
            [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]],  # no padding
        ]
    )
    mask = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 1]])
    out = pool(hidden, mask, "lasttoken")
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [5.0, 6.0], [3.0, 3.0]]))


def test_lasttoken_single_token_sequence():
    hidden = torch.tensor([[[4.0, 5.0], [8.0, 8.0]]])
    mask = torch.tensor([[1, 0]])
    torch.testing.assert_close(pool(hidden, mask, "lasttoken"), torch.tensor([[4.0, 5.0]]))


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_every_mode_gives_one_vector_per_row(mode):
    out = pool(HIDDEN, MASK, mode)
    assert out.shape == (2, 2)
    assert out.dtype == HIDDEN.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_padding_does_not_change_result(mode):
    """A sequence pooled alone equals the same sequence padded inside a batch."""
    alone = pool(HIDDEN[1:, :2], MASK[1:, :2], mode)
    padded = pool(HIDDEN[1:], MASK[1:], mode)
    torch.testing.assert_close(alone, padded)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown pooling mode 'median'"):
        pool(HIDDEN, MASK, "median")


def test_normalize_gives_unit_rows_and_keeps_zero_rows():
    vectors = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1e-3, 0.0], [5.0, 12.0]])
    out = normalize(vectors)
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(out[1], torch.tensor([0.0, 0.0]))
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out[2], torch.tensor([-1.0, 0.0]))
    torch.testing.assert_close(out[3], torch.tensor([5 / 13, 12 / 13]))
    norms = out.norm(dim=1)
    torch.testing.assert_close(norms[[0, 2, 3]], torch.ones(3))


def test_normalize_preserves_direction():
    vectors = torch.tensor([[2.0, -1.0, 0.5]])
    out = normalize(vectors)
    torch.testing.assert_close(out * vectors.norm(), vectors)
