"""Instruction data: readers of UniProt/PDB files, structures, instruction templates, splits, dataset builder."""
