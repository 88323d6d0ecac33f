"""Feeds and golden test data on disk: .npz, .npy, ONNX TensorProto .pb, test_data_set dirs
and tables (.csv, .parquet) of rows.

    feeds = load_feeds("feeds.npz", model.signature)        # [{"x": array}, ...]
    cases = load_test_cases("resnet50/", model.signature)   # model zoo: test_data_set_N/*.pb
    for case in cases:
        case.name, case.inputs, case.outputs
    save_test_case("golden/test_data_set_0", feeds[0], outputs)  # input_K.pb / output_K.pb
    save_npz("feeds.npz", feeds[0])                              # atomic
    parse_toml(text)                                          # recipes, ferry.toml

Every tensor type in ``signature.DTYPES`` round-trips: bfloat16 and float8 come back as
ml_dtypes arrays, strings as object arrays of ``str`` (what ONNX Runtime accepts). numpy
cannot name bfloat16/float8 in an .npz, so ``save_npz`` stores their raw bytes and the loaders
give them back their type from the signature. Files are never unpickled (unpickling can run
code): an .npz holding object arrays is refused. Anything unreadable raises ``DataError``.

The modules: ``load`` (any layout, matched to a signature), ``testsets`` (test_data_set
directories and ``TestCase``), ``tensors`` (TensorProto / .pb <-> numpy), ``npz`` (.npz and
.npy without pickle), ``rows`` (a table's columns as inputs) and ``toml``. They share their
working parts by public names; this ``__init__`` is the boundary.
"""

from __future__ import annotations

from .load import load_feeds, load_test_cases
from .npz import load_npz_arrays as load_npz_arrays
from .npz import save_npz
from .tensors import array_to_tensor, tensor_to_array
from .testsets import TestCase, save_test_case
from .toml import parse_toml as parse_toml

__all__ = [
    "TestCase",
    "array_to_tensor",
    "load_feeds",
    "load_test_cases",
    "save_npz",
    "save_test_case",
    "tensor_to_array",
]
