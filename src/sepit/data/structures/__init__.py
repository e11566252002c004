"""Protein structures: PDB/mmCIF/AlphaFold files → Cα traces → coordinates aligned to the protein's sequence →
one compressed store per dataset; plus Cα-only secondary structure.

>>> traces = parse_structure("1abc.cif.gz")                # every protein chain
>>> aligned = align_to_sequence(traces[0], protein.sequence)  # AlignedStructure | Rejection
>>> store = StructureStore(); store.add("P69905", aligned); store.save("structures.npz")
"""

from .align import AlignedStructure, Rejection, align_to_sequence
from .chain_trace import ChainTrace, StructureHeader, parse_structure
from .secondary import ca_secondary_structure
from .store import StoredInfo, StructureStore

__all__ = ["AlignedStructure", "ChainTrace", "Rejection", "StoredInfo", "StructureHeader", "StructureStore",
           "align_to_sequence", "ca_secondary_structure", "parse_structure"]
