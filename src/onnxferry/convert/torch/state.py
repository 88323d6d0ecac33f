"""State a module's forward keeps on itself between calls, put back after every call.

    with kept_state(module) as replaced:
        module(x)                  # forward sets self.hidden = ... (BeatNet's LSTM state)
    replaced                       # ["hidden"]: module.hidden is the tensor it was before

A streaming model may keep its recurrent state in plain tensor attributes that forward
replaces (``self.hidden, self.cell = ...``). Left alone, each run of the module during a
conversion starts where the last one stopped: the reference differs from one sample to the
next, and an attribute set during an ``inference_mode`` run is an inference tensor that the
exporters' tracing refuses ("Inference tensors cannot be saved for backward"). Every call here
starts from the values the module was loaded with, as the exported graph does (it holds them
as constants).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def kept_state(module: Any) -> Iterator[list[str]]:
    """Put back what the block changed of ``module`` and its submodules: attributes that held
    a tensor or None and were replaced, and buffers updated in place (a running mean's
    ``self.mean.mul_(0.9)``, a streaming convolution's cache) or replaced. Yields the
    qualified names of those changed, filled when the block ends. (An attribute forward fills
    from None, a state made on the first call or a cache, is put back to None without a
    name: the next call makes it again.)"""
    import torch

    saved: list[tuple[str, Any, str, Any]] = []
    buffers: list[tuple[str, Any, str, Any, int, Any]] = []
    if isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule):
        for prefix, sub in module.named_modules():
            for name, value in vars(sub).items():
                if value is None or isinstance(value, torch.Tensor):
                    saved.append((f"{prefix}.{name}" if prefix else name, sub, name, value))
            for name, buffer in sub._buffers.items():
                if isinstance(buffer, torch.Tensor) and not buffer.is_inference():
                    qualified = f"{prefix}.{name}" if prefix else name
                    buffers.append((qualified, sub, name, buffer, buffer._version, buffer.clone()))
    replaced: list[str] = []
    try:
        yield replaced
    finally:
        for qualified, sub, name, value in saved:
            if vars(sub).get(name) is not value:
                if value is not None:
                    replaced.append(qualified)
                vars(sub)[name] = value
        for qualified, sub, name, buffer, version, copy in buffers:
            if sub._buffers.get(name) is not buffer or buffer._version != version:
                replaced.append(qualified)
                sub._buffers[name] = buffer
                with torch.no_grad():
                    buffer.copy_(copy)


def state_note(label: str, replaced: list[str]) -> str:
    """What a module that keeps state between calls means for its conversion."""
    names = ", ".join(sorted(set(replaced)))
    return (
        f"{label}'s forward changes {names} on every call (state kept between calls): each "
        "run here starts from their values at load, and the ONNX model holds those as "
        "constants; to carry the state, take it as an input of forward and return the new one"
    )
