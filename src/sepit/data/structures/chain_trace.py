"""Parse PDB / mmCIF / AlphaFold files (plain or compressed, with or without header) into per-chain Cα traces.

A :class:`ChainTrace` holds one protein chain's observed residues in file order: one-letter codes (non-standard
residues mapped to their parent, e.g. MSE→M, SEP→S; unknown ones → X), Cα coordinates with a mask for residues
without a Cα, author residue numbers and insertion codes, and per-residue B-factors (pLDDT in AlphaFold files).
Alternate locations: the highest-occupancy Cα wins; of two residues sharing a number (micro-heterogeneity) the
one whose Cα has the higher occupancy is kept. Only one model is read (the first, unless asked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sepit.errors import InputError

from ..readers._open import DECOMPRESS_ERRORS, open_binary

try:  # gemmi is a core dependency; guard it so a broken install fails with a clear message, not at import
    import gemmi
except ImportError:  # pragma: no cover
    gemmi = None


@dataclass(frozen=True)
class StructureHeader:
    """What the file says about itself (empty strings where it says nothing, e.g. a headerless PDB)."""

    pdb_id: str = ""
    title: str = ""
    keywords: str = ""
    method: str = ""
    resolution: float | None = None
    predicted: bool = False  # an AlphaFold (or other) model: B-factors are pLDDT


@dataclass(frozen=True, eq=False)
class ChainTrace:
    """One protein chain's observed residues, in file order (L = number of residues).

    ``coords`` (L, 3) float32 Å, zero where ``mask`` (L,) is False (no Cα); ``resnums`` (L,) int32 author numbers;
    ``icodes`` str of length L (" " = none); ``bfactors`` (L,) float32 (Cα B-factor, or pLDDT); ``resnames`` the
    residue names as written.
    """

    chain: str
    sequence: str
    coords: np.ndarray
    mask: np.ndarray
    resnums: np.ndarray
    icodes: str
    bfactors: np.ndarray
    resnames: tuple[str, ...]
    header: StructureHeader = field(default_factory=StructureHeader)
    source: str = ""
    model: int = 0

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def residue_ids(self) -> list[str]:
        """``["12", "12A", "13", ...]``: author numbers with insertion codes."""
        return [f"{n}{c.strip()}" for n, c in zip(self.resnums.tolist(), self.icodes, strict=True)]


def _read(path: Path) -> gemmi.Structure:
    """gemmi Structure from any of: PDB, mmCIF, plain/gz/xz/bz2 — the format is sniffed from the content."""
    if gemmi is None:  # pragma: no cover
        raise InputError(path, "reading structures needs the 'gemmi' package (pip install gemmi)")
    try:
        with open_binary(path) as f:
            data = f.read()
    except DECOMPRESS_ERRORS as e:
        raise InputError(path, f"compressed data is corrupt or truncated ({e})") from None
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise InputError(path, "empty file")
    head = text.lstrip()[:4096]
    try:
        if head.startswith(("data_", "loop_")) or "\n_atom_site." in head:
            doc = gemmi.cif.read_string(text)
            st = gemmi.make_structure_from_block(doc.sole_block())
        elif any(head.startswith(k) or f"\n{k}" in head for k in ("ATOM  ", "HETATM", "HEADER", "MODEL ", "REMARK",
                                                                  "CRYST1", "COMPND", "TITLE ", "SEQRES")):
            st = gemmi.read_pdb_string(text)
        else:
            raise InputError(path, "not a PDB or mmCIF file")
    except (RuntimeError, ValueError, IndexError) as e:
        raise InputError(path, f"unreadable structure ({str(e).splitlines()[0][:120]})") from None
    if len(st) == 0:
        raise InputError(path, "no models (no ATOM records)")
    return st


def _header(st: gemmi.Structure) -> StructureHeader:
    info = dict(st.info.items()) if hasattr(st.info, "items") else {k: st.info[k] for k in st.info}
    title = " ".join(info.get("_struct.title", "").split())
    keywords = info.get("_struct_keywords.pdbx_keywords", "") or info.get("_struct_keywords.text", "")
    method = info.get("_exptl.method", "")
    pdb_id = info.get("_entry.id", "")  # not st.name: for a headerless PDB string gemmi calls it "string"
    predicted = "ALPHAFOLD" in title.upper() or pdb_id.upper().startswith("AF-") or "PREDICTED" in method.upper()
    res = st.resolution if st.resolution and st.resolution > 0 else None
    return StructureHeader(pdb_id=pdb_id if len(pdb_id) <= 40 else "", title=title, keywords=keywords.strip(),
                           method=method, resolution=res, predicted=predicted)


def _tabulated(name: str) -> gemmi.ResidueInfo | None:
    """gemmi's table entry for a residue name, None when gemmi does not know it (0.7 returns a 'not found' entry)."""
    t = gemmi.find_tabulated_residue(name)
    if t is None or (hasattr(t, "found") and not t.found()):
        return None
    return t


def _one_letter(name: str) -> str | None:
    """Parent one-letter code of an amino-acid residue name; 'X' for unknown amino acids; None if not one."""
    t = _tabulated(name)
    if t is None or not t.is_amino_acid():
        return None
    code = t.one_letter_code.upper()
    return code if code.isalpha() else "X"


def _best_ca(res: gemmi.Residue) -> gemmi.Atom | None:
    """The Cα (carbon named CA, not a calcium ion) with the highest occupancy."""
    best = None
    for atom in res:
        if atom.name == "CA" and atom.element.name == "C" and (best is None or atom.occ > best.occ):
            best = atom
    return best


def _is_protein_residue(res: gemmi.Residue) -> str | None:
    """One-letter code if the residue is an amino acid: tabulated as one, or untabulated but with N, CA and C."""
    code = _one_letter(res.name)
    if code is not None:
        return code
    if _tabulated(res.name) is None:
        names = {a.name for a in res}
        if {"N", "CA", "C"} <= names:
            return "X"
    return None


def _trace(chain: gemmi.Chain, header: StructureHeader, source: str, model: int) -> ChainTrace | None:
    try:
        span = chain.get_polymer()
        residues = list(span) if len(span) else list(chain)
    except RuntimeError:  # pragma: no cover - gemmi refuses odd chains
        residues = list(chain)
    kept: list[tuple[gemmi.Residue, str, gemmi.Atom | None]] = []
    for res in residues:
        if res.is_water():
            continue
        code = _is_protein_residue(res)
        if code is None:
            continue
        ca = _best_ca(res)
        if kept:
            prev, _, prev_ca = kept[-1]
            if prev.seqid.num == res.seqid.num and prev.seqid.icode == res.seqid.icode:
                # Micro-heterogeneity: two residue types at one position; keep the better-occupied one.
                if (ca.occ if ca else -1.0) > (prev_ca.occ if prev_ca else -1.0):
                    kept[-1] = (res, code, ca)
                continue
        kept.append((res, code, ca))
    if not kept or all(ca is None for _, _, ca in kept):  # e.g. a lone unknown HETATM: nothing to place
        return None
    n = len(kept)
    coords = np.zeros((n, 3), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    bfac = np.zeros(n, dtype=np.float32)
    for i, (res, _, ca) in enumerate(kept):
        if ca is not None:
            coords[i] = (ca.pos.x, ca.pos.y, ca.pos.z)
            mask[i] = True
            bfac[i] = ca.b_iso
        else:
            bfac[i] = float(np.mean([a.b_iso for a in res])) if len(res) else 0.0
    return ChainTrace(
        chain=chain.name, sequence="".join(c for _, c, _ in kept), coords=coords, mask=mask,
        resnums=np.array([r.seqid.num for r, _, _ in kept], dtype=np.int32),
        icodes="".join(r.seqid.icode if r.seqid.icode.strip() else " " for r, _, _ in kept),
        bfactors=bfac, resnames=tuple(r.name for r, _, _ in kept), header=header, source=source, model=model)


def parse_structure(path: str | Path, chain: str | None = None, model: int | None = None) -> list[ChainTrace]:
    """Protein chains of a PDB/mmCIF/AlphaFold file as :class:`ChainTrace` s (author chain ids, file order).

    ``model`` is a 0-based index into the file's models (default: the first); ``chain`` keeps only that author
    chain id. Raises InputError when the file is unreadable, the model or chain does not exist, or no chain holds
    an amino acid. A chain id split into several pieces (PDB files with TER then more ATOMs) is merged.
    """
    path = Path(path)
    st = _read(path)
    st.setup_entities()
    idx = 0 if model is None else model
    if not 0 <= idx < len(st):
        raise InputError(path, f"model index {idx} out of range (file has {len(st)} model(s))")
    header = _header(st)
    traces: list[ChainTrace] = []
    seen: dict[str, int] = {}
    without_ca: list[str] = []  # chains with amino acids but no Cα to place them (e.g. a Cα-less or P-only model)
    for ch in st[idx]:
        tr = _trace(ch, header, path.name, idx)
        if tr is None:
            if any(_is_protein_residue(r) is not None for r in ch) and ch.name not in without_ca:
                without_ca.append(ch.name)
            continue
        if tr.chain in seen:  # same author id twice: concatenate in file order
            i = seen[tr.chain]
            traces[i] = _concat(traces[i], tr)
        else:
            seen[tr.chain] = len(traces)
            traces.append(tr)
    if chain is not None and chain in without_ca and chain not in seen:
        raise InputError(path, f"chain {chain!r} has amino acids but no Cα atoms")
    if not traces:
        if without_ca:
            raise InputError(path, f"no Cα atoms in the protein chain(s) {', '.join(map(repr, without_ca))}")
        raise InputError(path, "no protein chain (no amino-acid residues)")
    if chain is not None:
        picked = [t for t in traces if t.chain == chain]
        if not picked:
            have = ", ".join(repr(t.chain) for t in traces)
            raise InputError(path, f"no protein chain {chain!r} (protein chains: {have})")
        return picked
    return traces


def _concat(a: ChainTrace, b: ChainTrace) -> ChainTrace:
    return ChainTrace(a.chain, a.sequence + b.sequence, np.concatenate([a.coords, b.coords]),
                      np.concatenate([a.mask, b.mask]), np.concatenate([a.resnums, b.resnums]), a.icodes + b.icodes,
                      np.concatenate([a.bfactors, b.bfactors]), a.resnames + b.resnames, a.header, a.source, a.model)
