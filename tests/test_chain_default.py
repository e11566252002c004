"""A structure file with several protein chains stands for its longest one when no chain is named (issue #22:
thrombin 1a4w opened on its 26-residue light chain): the API, the CLI and uploads choose the same chain, through
``sepit.proteins.default_protein``; ties go to file order, and a FASTA file still gives its first record."""

from __future__ import annotations

import argparse
import gzip
import logging

import pytest
from _two_chains import CHAINS, cif_text, pdb_text

from sepit.cli.ask import _protein
from sepit.proteins import default_protein, protein_from, protein_from_upload, read_structure_file


@pytest.fixture(params=["pdb", "cif"])
def complex_file(request, tmp_path):
    """The two-chain complex (short chain A first, longer chain B second) as a PDB or an mmCIF file."""
    path = tmp_path / f"two.{request.param}"
    path.write_text(pdb_text() if request.param == "pdb" else cif_text())
    return path


def test_the_file_keeps_both_chains_in_file_order(complex_file) -> None:
    assert [(p.id, p.sequence) for p in read_structure_file(complex_file)] == [("two:A", "GGG"), ("two:B", "AAAAAA")]


def test_protein_from_a_file_takes_the_longest_chain_and_says_so(complex_file, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sepit"):
        p = protein_from(complex_file)
    assert p.id == "two:B" and p.sequence == "AAAAAA" and p.has_structure
    [msg] = [r.getMessage() for r in caplog.records if "protein chains" in r.getMessage()]
    assert "2 protein chains (A 3 aa, B 6 aa); using the longest, chain B" in msg
    assert "chain=" in msg and "--chain" in msg


def test_a_named_chain_wins(complex_file) -> None:
    assert protein_from(complex_file, chain="A").id == "two:A"
    assert protein_from(str(complex_file), chain="B").id == "two:B"


def test_equally_long_chains_go_to_file_order(tmp_path) -> None:
    path = tmp_path / "tie.pdb"
    path.write_text(pdb_text((("C", "GLY", 4, 0.0), ("D", "ALA", 4, 30.0))))
    assert protein_from(path).id == "tie:C"


def test_the_cli_takes_the_same_chain(complex_file) -> None:
    args = argparse.Namespace(sequence=None, fasta=None, structure=str(complex_file), chain=None, record=None)
    assert _protein(args).id == "two:B"
    assert _protein(argparse.Namespace(**{**vars(args), "chain": "A"})).id == "two:A"


def test_an_upload_takes_the_same_chain(complex_file) -> None:
    data = gzip.compress(complex_file.read_bytes())
    chains = protein_from_upload(data, complex_file.name + ".gz")
    assert [p.id for p in chains] == ["two:A", "two:B"]
    assert default_protein(chains).id == "two:B"


def test_fasta_records_and_single_chains_keep_the_first(tmp_path) -> None:
    fasta = protein_from_upload(b">first\nGGG\n>second\nAAAAAA\n", "x.fasta")
    assert default_protein(fasta).sequence == "GGG"
    path = tmp_path / "x.fasta"
    path.write_text(">first\nGGG\n>second\nAAAAAA\n")
    assert protein_from(path).sequence == "GGG"
    one = tmp_path / "one.pdb"
    one.write_text(pdb_text(CHAINS[:1]))
    assert protein_from(one).id == "one:A"
