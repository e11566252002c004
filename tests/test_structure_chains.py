"""Chains that cannot be used say why: no Cα atoms (not "no amino acids"), and a mapped chain the file lacks."""

from __future__ import annotations

import pytest

from sepit.data.build_structures import MapRow, structures_from_files
from sepit.data.readers.skiplog import SkipLog
from sepit.data.structures import parse_structure
from sepit.errors import InputError


def _atom(serial: int, name: str, res: str, chain: str, num: int, x: float) -> str:
    element = name[0]
    return (f"ATOM  {serial:5d} {name:<4s} {res:3s} {chain}{num:4d}    {x:8.3f}{0.0:8.3f}{0.0:8.3f}"
            f"  1.00 20.00          {element:>2s}\n")


def _pdb(tmp_path, with_ca: dict[str, bool]):
    """A PDB file with one 3-residue alanine chain per key; a chain's residues lack their Cα unless True."""
    lines, serial = [], 1
    for chain, ca in with_ca.items():
        for num in (1, 2, 3):
            for name in ("N", "CA", "C", "O") if ca else ("N", "C", "O"):
                lines.append(_atom(serial, name, "ALA", chain, num, 3.8 * num + serial * 0.01))
                serial += 1
        lines.append("TER\n")
    path = tmp_path / "model.pdb"
    path.write_text("".join(lines) + "END\n")
    return path


def test_a_chain_without_calpha_is_named_as_such(tmp_path) -> None:
    path = _pdb(tmp_path, {"A": False})
    with pytest.raises(InputError, match=r"model.pdb: no Cα atoms in the protein chain\(s\) 'A'"):
        parse_structure(path)
    path = _pdb(tmp_path, {"A": True, "B": False})
    assert [t.chain for t in parse_structure(path)] == ["A"]
    with pytest.raises(InputError, match=r"chain 'B' has amino acids but no Cα atoms"):
        parse_structure(path, chain="B")
    with pytest.raises(InputError, match=r"no protein chain 'C' \(protein chains: 'A'\)"):
        parse_structure(path, chain="C")


def test_a_mapped_chain_missing_from_its_file_is_in_the_skip_log(tmp_path) -> None:
    _pdb(tmp_path, {"A": True})
    skips = SkipLog()
    store, _, used = structures_from_files({"P1": "AAA", "P2": "AAA"},
                                           [MapRow("P1", "model.pdb", "A"), MapRow("P2", "model.pdb", "Z")],
                                           tmp_path, skips)
    assert "P1" in store and "P2" not in store
    assert skips.counts["mapped chain not in structure file"] == 1
    assert skips.examples["mapped chain not in structure file"] == ["P2: model.pdb has no protein chain Z (has A)"]
