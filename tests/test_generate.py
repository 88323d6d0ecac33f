"""Realistic generated inputs: token ids in range, padded masks, two values per dynamic dim."""

from __future__ import annotations

import numpy as np

from onnxferry.generate import dynamic_dims, realistic_feeds, shape_plan
from onnxferry.signature import Signature
from tests.helpers import onnx_text

ENCODER = """
<ir_version: 10, opset_import: ["" : 21]>
g (int64[batch, seq] input_ids, int64[batch, seq] attention_mask, int64[batch, seq] token_type_ids,
   int64[batch, seq] position_ids, float[batch, 4] extra) => (int64[batch, seq] y) {
    y = Add(input_ids, attention_mask)
}
"""


STATIC = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[2] x) => (float[2] y) { y = Relu(x) }
"""


def _signature() -> Signature:
    return Signature.from_onnx(onnx_text(ENCODER))


def test_every_dynamic_dim_takes_two_values() -> None:
    sig = _signature()
    assert dynamic_dims(sig) == ["batch", "seq"]
    plans = shape_plan(sig)
    assert len(plans) == 2
    assert {p["batch"] for p in plans} == {1, 4}
    assert len({p["seq"] for p in plans}) == 2
    assert shape_plan(sig, fixed={"batch": 2, "seq": 5}) == [{"batch": 2, "seq": 5}]
    static = Signature.from_onnx(onnx_text(STATIC))
    assert shape_plan(static) == [{}]


def test_language_model_inputs_are_realistic() -> None:
    sig = _signature()
    feeds = realistic_feeds(
        sig, {"batch": 6, "seq": 10}, seed=1, value_ranges={"input_ids": (5, 50)}
    )
    sig.validate(feeds)
    mask, ids = feeds["attention_mask"], feeds["input_ids"]
    assert mask[0].all(), "row 0 is never padded"
    assert set(np.unique(mask)) <= {0, 1}
    padded_rows = [r for r in range(6) if not mask[r].all()]
    assert padded_rows and set(padded_rows) <= {1, 3, 5}
    for r in padded_rows:  # padding is a tail: once 0, stays 0
        first_pad = int(np.argmin(mask[r]))
        assert mask[r, :first_pad].all() and not mask[r, first_pad:].any()
    assert (ids[mask == 1] >= 5).all() and (ids[mask == 1] < 50).all()
    assert (ids[mask == 0] == 0).all(), "padded positions hold the pad id"
    assert set(np.unique(feeds["token_type_ids"])) <= {0, 1}
    np.testing.assert_array_equal(feeds["position_ids"][2], np.arange(10))
    assert feeds["extra"].dtype == np.float32


def test_same_seed_same_feeds() -> None:
    sig = _signature()
    a = realistic_feeds(sig, {"batch": 3, "seq": 4}, seed=7)
    b = realistic_feeds(sig, {"batch": 3, "seq": 4}, seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
