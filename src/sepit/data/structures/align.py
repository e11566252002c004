"""Place a structure chain on its protein's sequence: coordinates in the protein's numbering, or a reasoned rejection.

A chain is accepted only when its aligned residues are nearly identical to the protein (``min_identity``), most
of the chain finds a place (``min_chain_coverage``: tags and linkers may stay out), it covers enough of the protein
(``min_coverage``), and the alignment is geometrically consistent: protein-adjacent residues that both have a Cα
must be ~3.8 Å apart (``max_breaks`` violations at most), which catches a chain slid along a repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._align import align_pairs
from .chain_trace import ChainTrace

_CA_CA_MAX = 4.3  # Å; consecutive Cα are 3.8 Å apart (2.9 Å for cis-peptides)
_MAX_CELLS = 40_000_000  # DP cells before we narrow the protein to a seeded window (titin-sized proteins)


@dataclass(frozen=True, eq=False)
class AlignedStructure:
    """A chain's Cα coordinates in the protein's numbering (L = protein length).

    ``coords`` (L, 3) float32 (zero where ``mask`` is False), ``mask`` (L,) bool, ``bfactors`` (L,) float32 (pLDDT for
    predicted models); ``coverage`` = mask.mean(); ``identity`` over aligned residue pairs; ``chain_coverage`` =
    fraction of the chain's residues that aligned.
    """

    coords: np.ndarray
    mask: np.ndarray
    bfactors: np.ndarray
    coverage: float
    identity: float
    chain_coverage: float
    n_aligned: int
    chain: str = ""
    source: str = ""


@dataclass(frozen=True)
class Rejection:
    """Why a chain was not used for a protein (reason is one short phrase, details in the numbers)."""

    reason: str
    chain: str = ""
    source: str = ""
    identity: float = 0.0
    coverage: float = 0.0
    chain_coverage: float = 0.0

    def __str__(self) -> str:
        return f"{self.source}:{self.chain}: {self.reason}"


def _seed_window(chain: str, protein: str, k: int = 5) -> tuple[int, int]:
    """A protein window likely to hold the chain: the most-voted diagonal of shared k-mers, padded by the chain
    length on both sides (missing loops shift the diagonal)."""
    index: dict[str, list[int]] = {}
    for j in range(len(protein) - k + 1):
        index.setdefault(protein[j:j + k], []).append(j)
    votes: dict[int, int] = {}
    for i in range(len(chain) - k + 1):
        for j in index.get(chain[i:i + k], ()):
            votes[j - i] = votes.get(j - i, 0) + 1
    if not votes:
        return 0, len(protein)
    d = max(votes, key=lambda x: votes[x])
    return max(0, d - len(chain)), min(len(protein), d + 2 * len(chain))


def align_to_sequence(trace: ChainTrace, sequence: str, min_identity: float = 0.9, min_coverage: float = 0.0,
                      min_chain_coverage: float = 0.8, max_breaks: int = 2) -> AlignedStructure | Rejection:
    """Align ``trace`` to ``sequence`` (the protein, one-letter) and return its coordinates in protein numbering.

    Returns a :class:`Rejection` (never a silent misalignment) when identity, chain coverage, protein coverage or
    Cα geometry fall short. ``max_breaks`` is how many protein-adjacent aligned pairs may sit > 4.3 Å apart.
    """
    seq = sequence.upper()
    L = len(seq)
    base = {"chain": trace.chain, "source": trace.source}
    if len(trace) == 0 or L == 0:
        return Rejection("empty chain or sequence", **base)
    offset = 0
    protein = seq
    if (len(trace) + 1) * (L + 1) > _MAX_CELLS:
        lo, hi = _seed_window(trace.sequence, seq)
        offset, protein = lo, seq[lo:hi]
    pairs = align_pairs(trace.sequence, protein)
    if not pairs:
        return Rejection("no alignment", **base)
    ci = np.array([p[0] for p in pairs], dtype=np.int64)
    pj = np.array([p[1] for p in pairs], dtype=np.int64) + offset
    a = np.frombuffer(trace.sequence.encode("ascii", "replace"), dtype=np.uint8)[ci]
    b = np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)[pj]
    known = (a != ord("X")) & (b != ord("X"))
    identity = float((a[known] == b[known]).mean()) if known.any() else 0.0
    chain_cov = len(pairs) / len(trace)
    coords = np.zeros((L, 3), dtype=np.float32)
    mask = np.zeros(L, dtype=bool)
    bfac = np.zeros(L, dtype=np.float32)
    has_ca = trace.mask[ci]
    coords[pj[has_ca]] = trace.coords[ci[has_ca]]
    mask[pj[has_ca]] = True
    bfac[pj] = trace.bfactors[ci]
    coverage = float(mask.mean())
    nums = {"identity": identity, "coverage": coverage, "chain_coverage": chain_cov}
    if identity < min_identity:
        return Rejection(f"identity {identity:.2f} < {min_identity:.2f}", **base, **nums)
    if chain_cov < min_chain_coverage:
        return Rejection(f"only {chain_cov:.0%} of the chain aligns (< {min_chain_coverage:.0%})", **base, **nums)
    if not mask.any():
        return Rejection("no aligned residue has a Cα atom", **base, **nums)
    if coverage < min_coverage:
        return Rejection(f"covers {coverage:.0%} of the protein (< {min_coverage:.0%})", **base, **nums)
    both = mask[:-1] & mask[1:]
    gaps = np.linalg.norm(coords[1:] - coords[:-1], axis=1)
    breaks = int((both & (gaps > _CA_CA_MAX)).sum())
    if breaks > max_breaks:
        return Rejection(f"{breaks} adjacent residues > {_CA_CA_MAX} Å apart (misaligned)", **base, **nums)
    return AlignedStructure(coords=coords, mask=mask, bfactors=bfac, coverage=coverage, identity=identity,
                            chain_coverage=chain_cov, n_aligned=len(pairs), **base)
