"""Sequence-derived properties (length, average mass, composition) for the sequence QA tasks."""

from __future__ import annotations

from collections import Counter

from sepit.data.instructions.facts import join_list

# Average residue masses (Da, residue in a chain = amino acid − H2O), as ExPASy ProtParam uses them.
RESIDUE_MASS: dict[str, float] = {
    "A": 71.0788, "R": 156.1875, "N": 114.1038, "D": 115.0886, "C": 103.1388, "E": 129.1155, "Q": 128.1307,
    "G": 57.0519, "H": 137.1411, "I": 113.1594, "L": 113.1594, "K": 128.1741, "M": 131.1926, "F": 147.1766,
    "P": 97.1167, "S": 87.0782, "T": 101.1051, "W": 186.2132, "Y": 163.1760, "V": 99.1326, "U": 150.0388,
    "O": 237.3018, "B": 114.5962, "Z": 128.6231, "J": 113.1594,
}
UNKNOWN_RESIDUE_MASS = 110.0  # X and anything else: the usual average residue mass
WATER = 18.01524
AMINO_ACID_NAMES: dict[str, str] = {
    "A": "alanine", "R": "arginine", "N": "asparagine", "D": "aspartate", "C": "cysteine", "E": "glutamate",
    "Q": "glutamine", "G": "glycine", "H": "histidine", "I": "isoleucine", "L": "leucine", "K": "lysine",
    "M": "methionine", "F": "phenylalanine", "P": "proline", "S": "serine", "T": "threonine", "W": "tryptophan",
    "Y": "tyrosine", "V": "valine", "U": "selenocysteine", "O": "pyrrolysine",
}


def average_mass(sequence: str) -> float:
    """Average molecular mass in Da of the unmodified chain."""
    if not sequence:
        return 0.0
    return sum(RESIDUE_MASS.get(c, UNKNOWN_RESIDUE_MASS) for c in sequence) + WATER


def composition(sequence: str) -> list[tuple[str, float]]:
    """``[(one-letter code, fraction), ...]`` of the standard residues, most common first (ties by code)."""
    counts = Counter(c for c in sequence if c in AMINO_ACID_NAMES)
    n = len(sequence) or 1
    return sorted(((aa, counts.get(aa, 0) / n) for aa in AMINO_ACID_NAMES if aa not in "UO" or counts.get(aa)),
                  key=lambda kv: (-kv[1], kv[0]))


def aa_label(code: str) -> str:
    """``L`` → ``leucine (L)``."""
    return f"{AMINO_ACID_NAMES.get(code, code)} ({code})"


def mass_text(mass: float) -> str:
    """A mass in Da as answers word it: ``35.2 kDa``."""
    return f"{mass / 1000:.1f} kDa"


def composition_text(comp: list[tuple[str, float]]) -> str:
    """The three most common residues of a :func:`composition` as answers word them:
    ``leucine (L) 10.1%, serine (S) 8.0% and alanine (A) 7.7%``."""
    return join_list([f"{aa_label(aa)} {100 * f:.1f}%" for aa, f in comp[:3]])
