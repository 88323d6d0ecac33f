"""Write tests/data/regression.csv, the small bundled regression dataset (run once; committed).

    python tests/data/make_regression_csv.py

Six features on different scales and a target that depends on them linearly, with a mild
interaction and noise: 240 rows, a header ``x0,...,x5,y``, fixed seed, well under 20 KB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS = 240
SEED = 20240601
PATH = Path(__file__).with_name("regression.csv")


def make(rows: int = ROWS, seed: int = SEED) -> np.ndarray:
    """The dataset as one float64 array: features in columns 0-5, the target in column 6."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 10.0, 0.1, 5.0, 100.0, 2.0])
    offsets = np.array([0.0, 50.0, -1.0, 20.0, 300.0, 0.0])
    x = offsets + scales * rng.standard_normal((rows, scales.size))
    z = (x - offsets) / scales
    y = 3.0 * z[:, 0] - 2.0 * z[:, 1] + 0.5 * z[:, 2] + 1.5 * z[:, 3] * z[:, 4]
    y += 4.0 * np.tanh(z[:, 5]) + 10.0 + 0.3 * rng.standard_normal(rows)
    return np.column_stack([x, y])


def main() -> None:
    data = make()
    header = ",".join([*(f"x{i}" for i in range(data.shape[1] - 1)), "y"])
    np.savetxt(PATH, data, fmt="%.6g", delimiter=",", header=header, comments="")
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
