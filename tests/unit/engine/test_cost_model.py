"""The scheduler's cost model per encoder: padding counts only for a forward that computes it, and only
such a forward is calibrated (its overhead trades splits against padding)."""

from embedding_server.engine.engine import calibrated_cost
from embedding_server.engine.scheduler import CostModel, plan_batch


class _Encoder:
    """An encoder stand-in recording which of warm_up / calibrate the engine calls."""

    def __init__(self, padding_free: bool):
        self.padding_free, self.calls = padding_free, []

    def warm_up(self) -> None:
        self.calls.append("warm_up")

    def calibrate(self) -> tuple[float, float]:
        self.calls.append("calibrate")
        return 5.0, 0.25  # 5 ms per forward, 0.25 ms per token: overhead = 20 tokens


class _P:
    def __init__(self, length: int):
        self.length, self.request_id = length, 0


def test_padding_free_encoder_is_warmed_up_and_gets_zero_padding_weight():
    encoder = _Encoder(padding_free=True)
    assert calibrated_cost(encoder, "m").padding_weight == 0.0
    assert encoder.calls == ["warm_up"]


def test_padding_encoder_is_calibrated():
    encoder = _Encoder(padding_free=False)
    assert calibrated_cost(encoder, "m") == CostModel(overhead=20.0, per_token=1.0, padding_weight=1.0)
    assert encoder.calls == ["calibrate"]


def test_encoder_without_calibration_gets_the_default():
    assert calibrated_cost(object(), "m") == CostModel()


def test_bulk_request_is_one_forward_only_for_the_padding_free_encoder():
    # 32 inputs of 16..110 tokens (~1,900 real tokens, 3,520 padded): the padding-free forward takes all of
    # them in one pass under the default 2,048-token budget, the transformers forward does not.
    request = sorted((_P(16 + (i * 37) % 95) for i in range(32)), key=lambda p: p.length)
    assert sum(p.length for p in request) <= 2048
    free = plan_batch([request], 2048, 32, calibrated_cost(_Encoder(padding_free=True), "m"))
    padded = plan_batch([request], 2048, 32, calibrated_cost(_Encoder(padding_free=False), "m"))
    assert len(free) == 32
    assert len(padded) < 32
