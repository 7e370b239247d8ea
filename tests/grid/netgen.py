"""Small random networks for brute-force comparisons (AC or DC, radial start, extra ties)."""

from __future__ import annotations

import numpy as np

from powerflow.grid.case import Case


def random_case(seed: int, n: int = 10, ties: int = 3, dc: bool = False) -> Case:
    rng = np.random.default_rng(seed)
    f, t = [], []
    for i in range(1, n):
        f.append(int(rng.integers(0, i)))
        t.append(i)
    pairs = {(a, b) for a, b in zip(f, t)}
    while len(f) < n - 1 + ties:
        a, b = sorted(rng.choice(n, 2, replace=False).tolist())
        if (a, b) not in pairs:
            pairs.add((a, b))
            f.append(a)
            t.append(b)
    m = len(f)
    r = rng.uniform(0.002, 0.02, m)
    x = np.zeros(m) if dc else r * rng.uniform(0.5, 1.5, m)
    p = np.r_[0.0, rng.uniform(0.01, 0.05, n - 1)]
    q = np.zeros(n) if dc else p * rng.uniform(0.2, 0.6, n)
    closed = np.r_[np.ones(n - 1, bool), np.zeros(ties, bool)]
    return Case(f"random{seed}{'dc' if dc else ''}", 1.0, 12.66, np.arange(1, n + 1), np.array([0]),
                np.array([1.0]), p, q, np.array(f), np.array(t), r, x, closed, np.ones(m, bool),
                np.full(n, 0.9), np.full(n, 1.1)).validate()
