"""The C library locales a model's ``StringNormalizer`` nodes need, and a fix for the
common case.

    needed_locales(model.proto)      # {"StringNormalizer_1": "en_US.UTF-8"}
    missing_locales(model.proto)     # the same, for those this machine lacks
    portable_locales(model.proto)    # C.UTF-8 where it case-maps the same: {node: former}

ONNX Runtime builds a ``StringNormalizer``'s locale when it loads the model, from its
``locale`` attribute, or ``en_US.UTF-8`` on Linux when the model names none (skl2onnx's text
pipelines, which name none). Slim container images (``python:3.11-slim``) have only ``C``,
``C.UTF-8`` and ``POSIX``, and there the model does not load at all.

``C.UTF-8`` ships inside the C library. For ONNX Runtime 1.32 on glibc 2.36, its upper and
lower case mapping is the same as ``en_US.UTF-8``'s for every Unicode code point, measured
with each locale built by ``localedef`` (benchmarks/RESULTS.md, "StringNormalizer locales");
of the 318 UTF-8 locales glibc 2.36 ships, the 6 in ``CASE_MAPPING_DIFFERS`` map I and i
otherwise (Turkish, Azerbaijani, Crimean Tatar, Kurdish in Turkey, Tatar in its Latin
script: dotted and dotless i), and every other one maps every code point as ``C.UTF-8``
does. So a UTF-8 locale outside that list may be read as ``C.UTF-8``, which
``portable_locales`` does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import sys
from functools import cache
from typing import TYPE_CHECKING

from .errors import ModelLoadError
from .graphs import iter_nodes

if TYPE_CHECKING:
    import onnx

    from .model import Model

ORT_DEFAULT_LOCALE = "en_US.UTF-8"
"""The locale ONNX Runtime builds on Linux for a StringNormalizer that names none."""
PORTABLE_LOCALE = "C.UTF-8"
CASE_MAPPING_DIFFERS = ("az_", "crh_", "tr_", "ku_TR", "tt_RU@iqtelif", "tt_RU.UTF-8@iqtelif")
"""The glibc locales (by prefix) whose case mapping is not C.UTF-8's: 6 of 318, all for the
dotted and dotless i (``benchmarks/locales.py``)."""

_LOCALE_ERROR = re.compile(r"Failed to construct locale with name:\s*([^:\s]+)")


def needed_locales(proto: onnx.ModelProto) -> dict[str, str]:
    """Each ``StringNormalizer`` node (by name, else its output) -> the locale it loads."""
    found: dict[str, str] = {}
    for node in iter_nodes(proto):
        if node.op_type == "StringNormalizer" and node.domain in ("", "ai.onnx"):
            named = next((a.s.decode() for a in node.attribute if a.name == "locale"), "")
            found[node.name or node.output[0]] = named or ORT_DEFAULT_LOCALE
    return found


def missing_locales(proto: onnx.ModelProto) -> dict[str, str]:
    """The ``needed_locales`` this machine lacks (none where it cannot tell: not glibc)."""
    return {node: name for node, name in needed_locales(proto).items() if not has_locale(name)}


@cache
def has_locale(name: str) -> bool:
    """Whether the C library here builds locale ``name`` (True where it cannot tell)."""
    if not sys.platform.startswith("linux"):
        return True
    path = ctypes.util.find_library("c")
    if path is None:
        return True
    libc = ctypes.CDLL(path)
    libc.newlocale.restype = ctypes.c_void_p
    libc.newlocale.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    libc.freelocale.argtypes = (ctypes.c_void_p,)
    all_categories = 8127  # glibc's LC_ALL_MASK
    handle = libc.newlocale(all_categories, name.encode(), None)
    if not handle:
        return False
    libc.freelocale(handle)
    return True


def same_case_mapping(name: str) -> bool:
    """Whether ``name`` upper- and lower-cases as C.UTF-8 does (``CASE_MAPPING_DIFFERS``)."""
    return name in ("C", "POSIX") or (
        not name.startswith(CASE_MAPPING_DIFFERS) and name.upper().endswith((".UTF-8", ".UTF8"))
    )


def portable_locales(proto: onnx.ModelProto, *, everywhere: bool = False) -> dict[str, str]:
    """Sets ``locale`` to C.UTF-8 on every ``StringNormalizer`` whose locale this machine
    lacks (with ``everywhere``: every one, as for a model an exporter here writes) and that
    case-maps the same; returns those nodes' former locales."""
    from onnx import helper

    missing = needed_locales(proto) if everywhere else missing_locales(proto)
    changed: dict[str, str] = {}
    for node in iter_nodes(proto):
        name = node.name or (node.output[0] if node.output else "")
        locale = missing.get(name)
        if node.op_type != "StringNormalizer" or locale is None or not same_case_mapping(locale):
            continue
        kept = [a for a in node.attribute if a.name != "locale"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("locale", PORTABLE_LOCALE)])
        changed[name] = locale
    return changed


def locale_error(model: Model, message: str) -> ModelLoadError | None:
    """The one-line error for ONNX Runtime's ``message`` when it could not build a
    StringNormalizer's locale; None for any other message."""
    match = _LOCALE_ERROR.search(message)
    if match is None:
        return None
    locale = match[1]
    nodes = [n for n, name in needed_locales(model.proto).items() if name == locale]
    where = model.path or model.name
    default = " (ONNX Runtime's default where a model names none)" * (locale == ORT_DEFAULT_LOCALE)
    node = f"StringNormalizer {nodes[0]!r}" if nodes else "StringNormalizer"
    fix = (
        f"or `ferry convert {where} -o OUT.onnx`, which runs it in {PORTABLE_LOCALE} "
        "(the same case mapping)"
        if same_case_mapping(locale)
        else "it case-maps unlike C.UTF-8, so run it where that locale is installed"
    )
    short = locale.split(".")[0]
    return ModelLoadError(
        f"onnxruntime cannot load {where}: its {node} needs locale {locale}{default}, "
        "which this machine does not have",
        hint=f"install it (Debian/Ubuntu: apt-get install locales && locale-gen {short}.UTF-8), "
        + fix,
    )
