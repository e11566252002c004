"""A small synthetic complex for the chain-default tests: a short chain A (GGG) first, a longer chain B (AAAAAA)
second, 30 Å apart, as PDB or mmCIF text. ``chain_centroid`` gives the mean of a chain's atom positions (what a 3D
view centred on the chain looks at)."""

from __future__ import annotations

CHAINS = (("A", "GLY", 3, 0.0), ("B", "ALA", 6, 30.0))  # chain, residue, count, x offset (Å)


def atoms(chains=CHAINS) -> list[tuple[str, str, str, int, float, float, float]]:
    """(atom name, residue name, chain, residue number, x, y, z) of backbone atoms along a zig-zag in x."""
    out = []
    for chain, res, n, x0 in chains:
        for i in range(n):
            y0 = 1.0 if i % 2 else -1.0
            for name, dx, dy in (("N", -1.2, 0.5), ("CA", 0.0, 0.0), ("C", 1.2, 0.5), ("O", 1.4, 1.7)):
                out.append((name, res, chain, i + 1, x0 + 3.8 * i + dx, y0 + dy, 0.0))
    return out


def pdb_text(chains=CHAINS) -> str:
    lines, chain_before = [], None
    for serial, (name, res, chain, num, x, y, z) in enumerate(atoms(chains), start=1):
        if chain_before not in (None, chain):
            lines.append("TER\n")
        chain_before = chain
        lines.append(f"ATOM  {serial:5d}  {name:<3s} {res:3s} {chain}{num:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                     f"  1.00 20.00           {name[0]}\n")
    return "".join(lines) + "TER\nEND\n"


def cif_text(chains=CHAINS) -> str:
    head = ["data_two", "loop_"] + [f"_atom_site.{k}" for k in (
        "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
        "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
        "B_iso_or_equiv", "auth_seq_id", "auth_asym_id", "pdbx_PDB_model_num")]
    entity = {c[0]: i for i, c in enumerate(chains, start=1)}
    rows = [f"ATOM {i} {name[0]} {name} . {res} {chain} {entity[chain]} {num} ? {x:.3f} {y:.3f} {z:.3f} 1.00 20.00 "
            f"{num} {chain} 1" for i, (name, res, chain, num, x, y, z) in enumerate(atoms(chains), start=1)]
    return "\n".join(head + rows) + "\n"


def chain_centroid(chain: str, chains=CHAINS) -> tuple[float, float, float]:
    pts = [(x, y, z) for _, _, c, _, x, y, z in atoms(chains) if c == chain]
    return tuple(sum(p[k] for p in pts) / len(pts) for k in range(3))
