"""Affine-gap alignment of a structure chain to its protein sequence, vectorised over protein positions (numpy).

Both sequences may leave their ends unaligned for free (an overlap/"glocal" alignment): a chain may be one domain
of a longer protein (protein ends free) and carry expression tags (chain ends free). Internal gaps pay
``gap_open + gap_extend * (length - 1)``: a chain usually lacks whole disordered loops, so extension is cheap.
Each row (one chain residue) is a few numpy operations over all protein positions; the within-row gap uses the
prefix-maximum trick, exact for affine gaps because opening a second gap never beats extending the first.
"""

from __future__ import annotations

import numpy as np

MATCH = 2.0
MISMATCH = -2.0
UNKNOWN = 0.0  # X in either sequence
GAP_OPEN = 6.0
GAP_EXTEND = 0.25
_DIAG, _UP, _LEFT = 0, 1, 2


def _score_rows(protein: str) -> dict[str, np.ndarray]:
    p = np.frombuffer(protein.encode("ascii", "replace"), dtype=np.uint8)
    rows: dict[str, np.ndarray] = {}
    for c in set(protein) | {"X"}:
        r = np.where(p == ord(c), MATCH, MISMATCH).astype(np.float64)
        r[p == ord("X")] = UNKNOWN
        rows[c] = r
    return rows


def align_pairs(chain: str, protein: str) -> list[tuple[int, int]]:
    """Aligned (chain index, protein index) pairs, 0-based, in order; unaligned residues are left out."""
    m, n = len(chain), len(protein)
    if m == 0 or n == 0:
        return []
    rows = _score_rows(protein)
    x_row = np.full(n, UNKNOWN)
    ptr = np.zeros((m + 1, n + 1), dtype=np.int8)
    f_ext = np.zeros((m + 1, n + 1), dtype=bool)
    e_from = np.zeros((m + 1, n + 1), dtype=np.int32)
    prev_h = np.zeros(n + 1)
    prev_f = np.full(n + 1, -np.inf)
    ks = np.arange(n + 1)
    best, best_at = 0.0, (0, 0)
    for i in range(1, m + 1):
        c = chain[i - 1]
        s = x_row if c == "X" else rows.get(c, np.full(n, MISMATCH))
        diag = prev_h[:-1] + s
        f_open = prev_h[1:] - GAP_OPEN
        f_extend = prev_f[1:] - GAP_EXTEND
        f = np.maximum(f_open, f_extend)
        hp = np.empty(n + 1)
        hp[0] = 0.0  # chain residues before this one left unaligned for free
        hp[1:] = np.maximum(diag, f)
        # E[j] = max_{k<j} hp[k] - open - extend*(j-k-1): a run of protein residues the chain lacks.
        val = hp + GAP_EXTEND * ks
        cm = np.maximum.accumulate(val)
        is_rec = val >= cm
        arg = np.maximum.accumulate(np.where(is_rec, ks, 0))
        e = np.full(n + 1, -np.inf)
        e[1:] = cm[:-1] - GAP_OPEN - GAP_EXTEND * (ks[1:] - 1)
        h = np.maximum(hp, e)
        ptr[i, 1:] = np.where(h[1:] == e[1:], _LEFT, np.where(diag >= f, _DIAG, _UP))
        f_ext[i, 1:] = f_extend > f_open
        e_from[i, 1:] = arg[:-1]
        h[0] = 0.0
        prev_f = np.concatenate([[-np.inf], f])
        prev_h = h
        if i == m:  # last row: all chain residues consumed, trailing protein free
            j = int(np.argmax(h))
            if h[j] > best:
                best, best_at = float(h[j]), (i, j)
        if h[n] > best:  # last column: trailing chain residues free
            best, best_at = float(h[n]), (i, n)
    pairs: list[tuple[int, int]] = []
    i, j = best_at
    state = "H"
    while i > 0 and j > 0:
        if state == "F":
            state = "F" if f_ext[i, j] else "H"
            i -= 1
            continue
        p = ptr[i, j]
        if p == _DIAG:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif p == _UP:
            state = "F" if f_ext[i, j] else "H"
            i -= 1
        else:
            j = int(e_from[i, j])
    pairs.reverse()
    return pairs
