"""Bjontegaard delta rate: the average bit-rate difference of one RD curve against another
at equal quality (PSNR), over the PSNR interval both curves cover.

Both curves are modelled as log-rate as a function of PSNR and the two models are integrated
over the common interval; the mean log-rate difference d gives BD-rate = (e^d - 1) * 100 %.
Two models:
- ``"pchip"`` (default): piecewise cubic Hermite interpolation through the points
  (monotone-shape-preserving slopes), as in current JVET/VCEG practice; it passes through
  every point and does not oscillate the way a global cubic can on irregular curves.
- ``"cubic"``: one least-squares cubic per curve (the original VCEG-M33 method); degree
  drops to n-1 for curves of fewer than four points.
Negative BD-rate means the test curve needs fewer bits than the anchor for the same PSNR.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METHODS = ("pchip", "cubic")


class BDRateError(ValueError):
    """The curves do not allow a BD-rate (too few points, no common PSNR interval...)."""


def _prepare(rate: Sequence[float], psnr: Sequence[float], label: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(psnr, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise BDRateError(f"{label}: rate and PSNR must be 1-D lists of equal length")
    if len(r) < 2:
        raise BDRateError(f"{label}: needs at least 2 points, has {len(r)}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))) or np.any(r <= 0):
        raise BDRateError(f"{label}: rates must be positive and all values finite")
    order = np.argsort(q, kind="stable")
    q, r = q[order], r[order]
    if np.any(np.diff(q) <= 0):
        raise BDRateError(f"{label}: two points have the same PSNR")
    return q, np.log(r)


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives: zero at local extrema, weighted harmonic mean elsewhere."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    if n == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros(n)
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h0, h1, d0, d1):  # three-point end slope, kept shape-preserving
        s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(s) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(s) > 3 * abs(d0):
            return 3 * d0
        return s

    d[0] = end(h[0], h[1], delta[0], delta[1])
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        delta = (y[k + 1] - y[k]) / h
        # The segment as a cubic in t = x - x[k]; integrate it exactly.
        c = (y[k], d[k], (3 * delta - 2 * d[k] - d[k + 1]) / h, (d[k] + d[k + 1] - 2 * delta) / h**2)

        def antiderivative(t):
            return c[0] * t + c[1] * t**2 / 2 + c[2] * t**3 / 3 + c[3] * t**4 / 4

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return total


def _cubic_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    poly = np.polyint(np.polyfit(x, y, min(3, len(x) - 1)))
    return float(np.polyval(poly, hi) - np.polyval(poly, lo))


def bd_rate(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "pchip",
) -> float:
    """BD-rate of the test curve against the anchor, in percent."""
    return bd_rate_details(anchor_rate, anchor_psnr, test_rate, test_psnr, method)["bd_rate"]


def bd_rate_details(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "pchip",
) -> dict:
    """BD-rate in percent plus the PSNR interval it was measured over."""
    if method not in METHODS:
        raise BDRateError(f"unknown BD-rate method {method!r}; choose one of {', '.join(METHODS)}")
    qa, la = _prepare(anchor_rate, anchor_psnr, "anchor")
    qt, lt = _prepare(test_rate, test_psnr, "test")
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if hi <= lo:
        raise BDRateError(
            f"PSNR ranges do not overlap (anchor {qa[0]:.2f}-{qa[-1]:.2f} dB, test {qt[0]:.2f}-{qt[-1]:.2f} dB)"
        )
    integral = _pchip_integral if method == "pchip" else _cubic_integral
    mean_diff = (integral(qt, lt, lo, hi) - integral(qa, la, lo, hi)) / (hi - lo)
    return {"bd_rate": float((np.exp(mean_diff) - 1) * 100), "psnr_interval": [float(lo), float(hi)], "method": method}
