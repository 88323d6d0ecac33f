"""Which glibc locales case-map like C.UTF-8 in ONNX Runtime's StringNormalizer: the measure
behind ``onnxferry.locales.CASE_MAPPING_DIFFERS``.

    python benchmarks/locales.py LOCPATH_DIR     # every UTF-8 locale built in LOCPATH_DIR

Build the locales first, without installing anything system-wide (Debian/Ubuntu):

    apt-get download locales && dpkg -x locales_*.deb root
    grep ' UTF-8' root/usr/share/i18n/SUPPORTED | while read name cs; do
        I18NPATH=root/usr/share/i18n localedef -i "${name%%.*}" -f UTF-8 --no-archive \\
            "LOCPATH_DIR/$name"; done

(a ``@modifier`` name takes ``-i ll_CC@modifier``.) Every Unicode code point but the
surrogates goes through a LOWER and an UPPER StringNormalizer in each locale, and the locales
whose output differs from C.UTF-8's are printed with the code points that differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHUNK = 1024


def _case_maps(locale: str) -> tuple[list[str], list[str]]:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    points = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = np.array(
        ["".join(points[i : i + CHUNK]) for i in range(0, len(points), CHUNK)], dtype=object
    )
    out = []
    for action in ("LOWER", "UPPER"):
        node = helper.make_node(
            "StringNormalizer", ["x"], ["y"], case_change_action=action, locale=locale
        )
        io = [helper.make_tensor_value_info(n, TensorProto.STRING, [None]) for n in "xy"]
        graph = helper.make_graph([node], "case", io[:1], io[1:])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString())
        out.append(list(session.run(None, {"x": texts})[0]))
    return out[0], out[1]


def main() -> None:
    if len(sys.argv) == 3:  # a child: one locale, its case maps on stdout
        lower, upper = _case_maps(sys.argv[2])
        sys.stdout.write("\x00".join(lower + upper))
        return
    import platform

    import onnxruntime as ort

    root = Path(sys.argv[1])
    env = {**os.environ, "LOCPATH": str(root)}

    def maps(locale: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, __file__, str(root), locale], env=env, capture_output=True, check=True
        )
        return done.stdout.decode().split("\x00")

    reference = maps("C.UTF-8")
    names = sorted(p.name for p in root.iterdir())  # all built with -f UTF-8
    print(
        f"onnxruntime {ort.__version__}, glibc {platform.libc_ver()[1]}, {len(names)} locales, "
        f"{len(reference) // 2} strings of {CHUNK} code points each way"
    )
    differ = []
    for name in names:
        got = maps(name)
        changed = sorted(
            {
                f"{a[i]}->{b[i]}"
                for a, b in zip(reference, got, strict=True)
                if a != b
                for i in range(min(len(a), len(b)))
                if a[i] != b[i]
            }
        )
        if changed:
            differ.append(name)
            print(f"{name}: {' '.join(changed[:6])}")
    print(f"same as C.UTF-8: {len(names) - len(differ)} of {len(names)}; differ: {differ}")


if __name__ == "__main__":
    main()
