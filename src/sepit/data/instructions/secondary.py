"""Secondary-structure facts from a per-residue 3-state string (``H`` helix, ``E`` strand, ``C`` coil, ``-`` no
coordinates), as the structure store's Cα assignment gives it.

Classes (CATH-like, on resolved residues; mutually exclusive, so a different class is always a false answer):
mainly alpha (H ≥ 40%, E < 10%), mainly beta (E ≥ 30%, H < 10%), mixed alpha/beta (H ≥ 15%, E ≥ 10%), mostly
irregular (H + E < 20%); anything else has no class and gets no yes/no question.
"""

from __future__ import annotations

from dataclasses import dataclass

SS_CLASSES: tuple[str, ...] = ("mainly alpha-helical", "mainly beta-sheet", "a mixed alpha/beta protein",
                               "mostly irregular, with few helices or strands")
MIN_RESOLVED = 20


@dataclass(frozen=True)
class SecondaryStructure:
    resolved: int
    total: int
    helix: float
    strand: float

    @property
    def ss_class(self) -> str | None:
        h, e = self.helix, self.strand
        if h >= 0.40 and e < 0.10:
            return SS_CLASSES[0]
        if e >= 0.30 and h < 0.10:
            return SS_CLASSES[1]
        if h >= 0.15 and e >= 0.10:
            return SS_CLASSES[2]
        if h + e < 0.20:
            return SS_CLASSES[3]
        return None

    def describe(self) -> str:
        """``About 45% of the 230 resolved residues (of 250) are in alpha-helices and 12% in beta-strands``."""
        text = (f"About {round(100 * self.helix)}% of the {self.resolved} residues resolved in the structure "
                f"(of {self.total}) are in alpha-helices and {round(100 * self.strand)}% in beta-strands")
        cls = self.ss_class
        return f"{text}; it is {cls}" if cls else text


def summarize(labels: str) -> SecondaryStructure | None:
    """Fractions of helix/strand over resolved residues; None when fewer than ``MIN_RESOLVED`` are resolved."""
    resolved = sum(1 for c in labels if c != "-")
    if resolved < MIN_RESOLVED:
        return None
    return SecondaryStructure(resolved=resolved, total=len(labels), helix=labels.count("H") / resolved,
                              strand=labels.count("E") / resolved)
