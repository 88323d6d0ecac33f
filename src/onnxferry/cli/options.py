"""Options more than one verb takes, declared once: the same name, type, default and help.

    @click.command()
    @click.argument("model")
    @runtime_options
    @size_options
    @tolerance_options()        # --atol / --rtol arrive as one `tolerance` (or None)
    @report_options
    def verb(model, provider, threads, dims, input_shapes, tolerance, as_json, report_path): ...

Values are parsed by the types in ``cli.types`` (one line and exit 2 when they do not parse);
defaults that are decisions (tolerances, sizes, a source's framework) stay with the API.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from ..convert.base import FRAMEWORKS
from ..parity import Tolerance
from .types import (
    BINDING,
    DIM,
    DYNAMIC_AXES,
    INT_LIST,
    NAME_LIST,
    SEED,
    SHAPE,
    as_dict,
    as_dynamic,
)

F = TypeVar("F", bound=Callable[..., Any])


def _compose(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """Decorators applied as if stacked in this order (the first one on top)."""

    def apply(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


# --- output -----------------------------------------------------------------------------

report_options = _compose(
    click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also save the report to this file: JSON, or a self-contained HTML page for a "
        ".html path (written atomically).",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
)


def output_option(fn: F) -> F:
    """``-o/--output FILE``, required."""
    return click.option(
        "-o",
        "--output",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Where to write the model (written atomically).",
    )(fn)


# --- inputs and their sizes -------------------------------------------------------------


def inputs_option(what: str) -> Callable[[F], F]:
    """``--inputs PATH``: feeds from a file or a test-data directory, used as ``what``."""
    return click.option("--inputs", help=f"{what}: .npz, .npy, .pb or a test-data directory.")


dim_option = click.option(
    "--dim",
    "dims",
    type=DIM,
    multiple=True,
    callback=as_dict,
    help="Size of an open dim: NAME=SIZE, or INPUT:AXIS=SIZE for one without a name.",
)
shape_option = click.option(
    "--input-shape",
    "input_shapes",
    type=SHAPE,
    multiple=True,
    callback=as_dict,
    help="An input's whole shape, NAME=1x3x224x224.",
)


def batch_option(default: str) -> Callable[[F], F]:
    """``--batch 1,8,32``: the batch sizes to measure, as ``batches``."""
    return click.option(
        "--batch",
        "batches",
        type=INT_LIST,
        default=default,
        show_default=True,
        help="Batch sizes to bench, e.g. 1,8,32.",
    )


size_options = _compose(dim_option, shape_option)
"""``--dim`` (open dims by name) and ``--input-shape`` (whole shapes), as dicts."""
assume_sizes_option = click.option(
    "--assume-sizes", is_flag=True, help="Judge at chosen sizes for open dims nobody gave."
)


def seed_option(what: str) -> Callable[[F], F]:
    """``--seed`` (0 by default, at most 2**32 - 1), the seed for ``what``."""
    return click.option("--seed", type=SEED, default=0, show_default=True, help=f"Seed for {what}.")


def public_key_option(purpose: str, *, required: bool = False) -> Callable[[F], F]:
    """``--public-key PEM``: the ECDSA public key (from `ferry keygen`), as ``public_key``."""
    return click.option(
        "--public-key",
        required=required,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"The ECDSA public key (PEM) {purpose}.",
    )


def certificate_chain_option(help_text: str) -> Callable[[F], F]:
    """``--certificate-chain PEM`` (repeatable), as ``certificate_chain``: a tuple of paths."""
    return click.option(
        "--certificate-chain",
        "certificate_chain",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=help_text,
    )


def encrypt_key_option(purpose: str) -> Callable[[F], F]:
    """``--encrypt-key-file FILE``: the registry's AES-256 key, as ``encrypt_key_file``."""
    return click.option(
        "--encrypt-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"The AES key {purpose} (else env FERRY_REGISTRY_KEY).",
    )


# --- runtime ----------------------------------------------------------------------------

provider_option = click.option(
    "--provider",
    default="cpu",
    show_default=True,
    help="Execution provider (cpu, cuda, tensorrt, openvino, ...).",
)
threads_option = click.option(
    "--threads", type=int, help="Intra-op threads (default: ONNX Runtime's)."
)
runtime_options = _compose(provider_option, threads_option)

precision_option = click.option(
    "--precision",
    type=click.Choice(("fp32", "fp16", "int8")),
    default="fp32",
    show_default=True,
    help="What tensorrt (fp16, int8) or openvino (fp16) computes in; other providers: fp32.",
)
engine_cache_option = click.option(
    "--engine-cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="tensorrt: engine cache root (default: ~/.cache/onnxferry/tensorrt).",
)
precision_options = _compose(
    precision_option,
    engine_cache_option,
    click.option(
        "--calibration-table",
        type=click.Path(dir_okay=False, path_type=Path),
        help="tensorrt int8 on a model without Q/DQ nodes: TensorRT's calibration table.",
    ),
)
"""``--precision``, ``--engine-cache`` and ``--calibration-table``, as ``runtime.SessionConfig``
takes them (``precision``, ``engine_cache``, ``calibration_table``)."""

devices_option = click.option(
    "--devices",
    metavar="LIST",
    help="A device pool, one session per device: cuda:0,cuda:1 (or tensorrt:N, cpu,cpu); "
    "sets the provider.",
)
"""``--devices`` as ``devices.parse_devices`` reads it (the verb parses it: one-line errors)."""


def custom_ops_options(fn: F) -> F:
    """``--custom-ops FILE`` (repeatable) and ``--trust-custom-ops``: the verb's sessions run
    the files' onnxruntime-extensions ``onnx_op`` operators. The files load
    (``customops.load_custom_ops``: refused without the trust flag) before the verb runs;
    the verb itself takes neither value."""

    @functools.wraps(fn)
    def verb(
        *args: Any, custom_ops: tuple[Path, ...], trust_custom_ops: bool, **kwargs: Any
    ) -> Any:
        if custom_ops:
            from ..customops import load_custom_ops

            for file in custom_ops:
                load_custom_ops(file, trust=trust_custom_ops)
        return fn(*args, **kwargs)

    return _compose(
        click.option(
            "--custom-ops",
            "custom_ops",
            multiple=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="A Python file of onnxruntime-extensions @onnx_op operators the model uses "
            "(repeatable; needs --trust-custom-ops).",
        ),
        click.option(
            "--trust-custom-ops",
            is_flag=True,
            help="Allow loading --custom-ops files. Loading runs their Python code: only for "
            "files from a source you trust.",
        ),
    )(cast(F, verb))


# --- sources (framework models) ---------------------------------------------------------

framework_option = click.option(
    "--framework",
    type=click.Choice(FRAMEWORKS),
    help="The source's framework (default: told from the file).",
)
dynamic_option = click.option(
    "--dynamic",
    type=DYNAMIC_AXES,
    multiple=True,
    callback=as_dynamic,
    help="Dynamic axes, NAME:0=batch,1=seq, or static (default: dim 0 is batch).",
)
trust_pickle_option = click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow loading a pickle/joblib source. Unpickling runs arbitrary code: only for "
    "files from a source you trust.",
)

custom_export_option = click.option(
    "--custom-export",
    type=click.Path(dir_okay=False, path_type=Path),
    help="torch: a Python file translating custom layers to ONNX (custom_translation_table "
    "for dynamo, symbolics for TorchScript).",
)


graph_outputs_option = click.option(
    "--graph-outputs",
    type=NAME_LIST,
    default=[],
    help="A TensorFlow graph's tensors to convert as its outputs, prob or split:1 (default: "
    "the graph's ends).",
)
bind_option = click.option(
    "--bind",
    "bindings",
    type=BINDING,
    multiple=True,
    callback=as_dict,
    help="Fix a TensorFlow graph's placeholder to a value, keep_prob=1.0 (a bool switching "
    "tf.cond branches is fixed to false unless bound).",
)


def source_options(inputs: str) -> Callable[[F], F]:
    """The options that load a framework model: ``--framework``, ``--input-shape``,
    ``--inputs`` (used as ``inputs``), ``--dynamic``, ``--trust-pickle``, and a TensorFlow
    graph's ``--graph-outputs`` and ``--bind`` (as ``bindings``)."""
    return _compose(
        framework_option,
        shape_option,
        inputs_option(inputs),
        dynamic_option,
        trust_pickle_option,
        graph_outputs_option,
        bind_option,
    )


def lineage_options(what: str, parent: str) -> Callable[[F], F]:
    """``--registry DIR``, ``--name`` and ``--parent``: register ``what`` a verb writes, with
    ``parent`` (its help) as the version it derives from."""
    return _compose(
        click.option(
            "--registry",
            type=click.Path(file_okay=False, path_type=Path),
            help=f"Register {what} in this registry (with --name), with its parent recorded.",
        ),
        click.option("--name", help=f"The registry name to add {what} under."),
        click.option("--parent", help=f"{parent} (NAME:VERSION); default: found by digest."),
    )


# --- judging ----------------------------------------------------------------------------


def tolerance_options(source: str | None = None) -> Callable[[F], F]:
    """``--atol`` / ``--rtol``, handed to the verb as one ``tolerance``: None when neither is
    given (the verb's default applies), else ``Tolerance.partial``. ``source`` says which
    framework source's own default applies instead of Tolerance's, if any."""
    default = Tolerance()

    def shown(value: float) -> str:
        return f"{value:g}" if source is None else f"{value:g}; {source}"

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def verb(*args: Any, atol: float | None, rtol: float | None, **kwargs: Any) -> Any:
            return fn(*args, tolerance=Tolerance.partial(atol, rtol), **kwargs)

        return _compose(
            click.option(
                "--atol", type=float, help=f"Absolute tolerance (default: {shown(default.atol)})."
            ),
            click.option(
                "--rtol", type=float, help=f"Relative tolerance (default: {shown(default.rtol)})."
            ),
        )(cast(F, verb))

    return decorate


budget_options = _compose(
    click.option(
        "--max-drop",
        type=float,
        default=0.01,
        show_default=True,
        help="Budget: cosine >= 1 - drop, or the task metric's drop with --eval.",
    ),
    click.option(
        "--budget", help="Explicit budget, e.g. cosine>=0.999, top1>=0.99, max_abs<=1e-3."
    ),
    click.option("--eval", "eval_data", help="Labelled data (.npz: the inputs plus labels)."),
)
"""``--max-drop``, ``--budget`` and ``--eval``: what an optimized model may lose."""
