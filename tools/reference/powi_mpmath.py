"""The true powers x^n, correctly rounded to f64, that tests/ops.rs pins powi against.

Computed with mpmath at 60 significant digits (x converted exactly from its f64 value):
    python3 tools/reference/powi_mpmath.py
"""

import mpmath

mpmath.mp.dps = 60
XS = [1.0 + 1e-9, 1.0 - 1e-9, 1.0000001, -(1.0 + 1e-10), 3.0, 1.5, 1.0 + 2**-52, -1.0 - 2**-52]
NS = [2147483647, -2147483648, -2147483647, 1000003, 1 << 20, 64, -64, 5, 4, 3, 2, -2, -3]

for x in XS:
    for n in NS:
        f = float(mpmath.mpf(x) ** n)
        if f != 0.0 and abs(f) < float("inf") and abs(f) >= 2.2250738585072014e-308:
            print(f"    ({x!r}, {n}, {f!r}),")
