"""Secondary structure from Cα coordinates alone (P-SEA-like), for structures read as Cα traces.

After P-SEA (Labesse et al., CABIOS 13:291, 1997), in the variant Biotite's ``annotate_sse`` uses. For residue i:
``d2 = |Cα(i-1) Cα(i+1)|``, ``d3 = |Cα(i-1) Cα(i+2)|``, ``d4 = |Cα(i-1) Cα(i+3)|``, ``τ`` = the Cα(i-1)-Cα(i)-Cα(i+1)
angle and ``α`` = the Cα(i-1..i+2) dihedral.

* helix candidate: d3 = 5.3±0.5 Å and d4 = 6.4±0.6 Å, or τ = 89±12° and α = 50±20°; a run of ≥ 5 candidates is a
  helix, extended by one residue at each end whose d3 or τ fits.
* strand candidate: d2 = 6.7±0.6, d3 = 9.9±0.9 and d4 = 12.4±1.1 Å, or τ = 124±14° and α in [-180°, -125°] ∪
  [145°, 180°]; a run of ≥ 4 candidates is a strand, a run of 3 only if its Cα have ≥ 5 neighbours at 4.2-5.2 Å
  (a partner strand); strands are extended by one residue whose d3 fits.

Windows that touch a residue without a Cα, or a chain break (consecutive Cα > 4.3 Å apart), are undefined.
Returns one character per residue: ``H`` helix, ``E`` strand, ``C`` other, ``-`` no Cα.
"""

from __future__ import annotations

import numpy as np

_RAD = np.pi / 180
_D2_E, _D3_E, _D4_E = (6.1, 7.3), (9.0, 10.8), (11.3, 13.5)
_D3_H, _D4_H = (4.8, 5.8), (5.8, 7.0)
_TAU_H, _ALPHA_H = ((89 - 12) * _RAD, (89 + 12) * _RAD), ((50 - 20) * _RAD, (50 + 20) * _RAD)
_TAU_E = ((124 - 14) * _RAD, (124 + 14) * _RAD)
_BREAK = 4.3


def _within(x: np.ndarray, lim: tuple[float, float]) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (x >= lim[0]) & (x <= lim[1])


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def ca_secondary_structure(coords: np.ndarray, mask: np.ndarray | None = None) -> str:
    """Per-residue ``H``/``E``/``C`` (``-`` where there is no Cα) from Cα coords (L, 3) and mask (L,)."""
    x = np.asarray(coords, dtype=np.float64)
    n = len(x)
    m = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if n == 0:
        return ""
    x = np.where(m[:, None], x, np.nan)
    # A break between i and i+1 poisons every window that spans it.
    step = np.linalg.norm(x[1:] - x[:-1], axis=1)
    with np.errstate(invalid="ignore"):
        broken = ~(step <= _BREAK)
    cut = np.concatenate([[0], np.cumsum(broken)])  # segment id of each residue

    def pick(offset: int) -> np.ndarray:
        """Coordinates of residue i+offset for every i (NaN outside the chain)."""
        out = np.full((n, 3), np.nan)
        lo, hi = max(0, -offset), min(n, n - offset)
        if hi > lo:
            out[lo:hi] = x[lo + offset:hi + offset]
        return out

    def same_segment(a: int, b: int) -> np.ndarray:
        ok = np.zeros(n, dtype=bool)
        idx = np.arange(n)
        ia, ib = idx + a, idx + b
        valid = (ia >= 0) & (ib < n)
        ok[valid] = cut[ia[valid]] == cut[ib[valid]]
        return ok

    pm1, p0, p1, p2, p3 = pick(-1), pick(0), pick(1), pick(2), pick(3)
    d2 = np.where(same_segment(-1, 1), np.linalg.norm(p1 - pm1, axis=1), np.nan)
    d3 = np.where(same_segment(-1, 2), np.linalg.norm(p2 - pm1, axis=1), np.nan)
    d4 = np.where(same_segment(-1, 3), np.linalg.norm(p3 - pm1, axis=1), np.nan)
    u, v = pm1 - p0, p1 - p0
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_t = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
        tau = np.where(same_segment(-1, 1), np.arccos(np.clip(cos_t, -1, 1)), np.nan)
        b1, b2, b3 = p0 - pm1, p1 - p0, p2 - p1
        n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
        # IUPAC sign: atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3)); an α-helix has α ≈ +50°.
        alpha = np.arctan2(np.linalg.norm(b2, axis=1) * (b1 * n2).sum(1), (n1 * n2).sum(1))
        alpha = np.where(same_segment(-1, 2), alpha, np.nan)

    ss = np.full(n, "C", dtype="<U1")
    pot_h = (_within(d3, _D3_H) & _within(d4, _D4_H)) | (_within(tau, _TAU_H) & _within(alpha, _ALPHA_H))
    helix = np.zeros(n, dtype=bool)
    for a, b in _runs(pot_h):
        if b - a >= 5:
            helix[a:b] = True
    ext_h = _within(d3, _D3_H) | _within(tau, _TAU_H)
    for a, b in _runs(helix):
        ss[a:b] = "H"
        if a > 0 and ext_h[a - 1]:
            ss[a - 1] = "H"
        if b < n and ext_h[b]:
            ss[b] = "H"

    alpha_e = _within(alpha, (-180 * _RAD, -125 * _RAD)) | _within(alpha, (145 * _RAD, 180 * _RAD))
    pot_e = (_within(d2, _D2_E) & _within(d3, _D3_E) & _within(d4, _D4_E)) | (_within(tau, _TAU_E) & alpha_e)
    pot_e &= ss != "H"
    ok = np.flatnonzero(m)
    for a, b in _runs(pot_e):
        length = b - a
        if length < 3:
            continue
        if length == 3:
            dist = np.linalg.norm(x[a:b, None, :] - x[None, ok, :], axis=2)
            if int(((dist >= 4.2) & (dist <= 5.2)).sum()) < 5:
                continue
        ss[a:b] = "E"
        if a > 0 and ss[a - 1] == "C" and _within(d3[a - 1:a], _D3_E)[0]:
            ss[a - 1] = "E"
        if b < n and ss[b] == "C" and _within(d3[b:b + 1], _D3_E)[0]:
            ss[b] = "E"
    ss[~m] = "-"
    return "".join(ss.tolist())
