"""PyTorch models as conversion sources: modules, factory files, TorchScript and torch.export.

    source = load_torch(net, ConvertOptions(), example_inputs=(torch.randn(2, 3, 32, 32),))
    source = load_torch("models/net.py:make", options)  # make() -> module or (module, inputs)
    source = load_torch("net.ts", ConvertOptions(input_shapes={"x": (1, 3, 32, 32)}))
    source = load_torch("net.pt2", ConvertOptions())     # torch.export.save'd, with its inputs
    source.reference.run({"x": x})                       # the module itself, {name: array}
    [c.exporter for c in source.candidates]  # ["torch.onnx (dynamo)", "torch.onnx (torchscript)"]

Inputs are named after ``forward``'s parameters: a tuple of example tensors fills them in
order, a dict (``input_ids``, ``attention_mask``, ...) by keyword. Outputs are the forward's
result flattened: dict and transformers ``ModelOutput`` keys keep their names
(``last_hidden_state``), everything else is ``output_0``, ``output_1``, ... in order. Dynamic
axes follow ``ConvertOptions.axes_for``; each name becomes one ``torch.export.Dim`` shared by
every input that uses it, and the reference signature carries the same names.

"torch.onnx (dynamo)" is ``torch.onnx.export(dynamo=True, dynamic_shapes=...)``, which runs
``torch.export.export(strict=False)`` with its own while-loop decompositions for LSTM/GRU and
size-oblivious 0/1 dims, then translates; a TorchScript module goes through torch's TS2EP
converter first. "torch.onnx (torchscript)" traces the module (opset 20 at most) through a
wrapper that takes the inputs by position and returns a flat tuple. Either names an unsupported
operator with the module it sits in. With torch 2.13: ``torch.cond`` exports only with dynamo
(an ONNX ``If``); TorchScript control flow only with the TorchScript exporter (``If``/``Loop``;
TS2EP stops at ``prim::Loop``); an LSTM keeps a dynamic sequence with both (dynamo declares the
output's sequence axis static, which is relaxed here after the reference showed it varies).

A custom layer (a ``torch.library`` operator) exports through the user's translations
(``ConvertOptions.custom_export``, ``--custom-export FILE``: ``custom``).

The modules (``sources``, ``inputs``, ``specs``, ``runner``, ``export``, ``naming``,
``export_errors``, ``quiet``, ``divergence``, ``load``, ``custom``) share their working parts
by public names; this ``__init__`` is the boundary, and ``__all__`` the API.
"""

from __future__ import annotations

from .divergence import find_module_divergence
from .export import DYNAMO, TORCHSCRIPT
from .load import load_torch
from .runner import TorchRunner, flatten_outputs

__all__ = [
    "DYNAMO",
    "TORCHSCRIPT",
    "TorchRunner",
    "find_module_divergence",
    "flatten_outputs",
    "load_torch",
]
