"""Streaming readers of protein sources → :class:`~sepit.data.records.ProteinEntry`.

Every reader is a generator over one file (plain, gzip, xz or bz2, sniffed by magic bytes), takes an optional
:class:`SkipLog` where malformed records are counted by reason, and raises :class:`~sepit.errors.InputError` when the
file as a whole is unusable (missing, empty, wrong format, corrupt at the start). A compressed file cut short
keeps every complete record before the break and records ``"truncated input"``.

>>> skips = SkipLog()
>>> for entry in read_proteins("uniprot_sprot.dat.gz", skips): ...
>>> skips.as_dict()   # {"bad sequence": 2, ...} for the manifest
"""

from ._open import LineSource, compression_of, open_binary, open_text
from .detect import FORMATS, read_proteins, sniff_format
from .fasta import parse_fasta_header, read_fasta
from .skiplog import SkipLog
from .sprot2014 import GoInfo, HumanInfo, read_go_terms, read_human_table, read_sprot2014
from .uniprot_flat import read_uniprot_flat
from .uniprot_tsv import read_uniprot_tsv
from .uniprot_xml import read_uniprot_xml

__all__ = ["FORMATS", "GoInfo", "HumanInfo", "LineSource", "SkipLog", "compression_of", "open_binary", "open_text",
           "parse_fasta_header", "read_fasta", "read_go_terms", "read_human_table", "read_proteins",
           "read_sprot2014", "read_uniprot_flat", "read_uniprot_tsv", "read_uniprot_xml", "sniff_format"]
