"""Chat messages + proteins → model tensors: chat template, ``<protein>`` expansion, assistant-only labels, batches.

Each ``<protein>`` marker in a user/system message becomes ``<protein_start>`` + n × ``<protein>`` +
``<protein_end>``, where n is that protein's residue count (``ceil(L / pool)`` with pooling); the n slots are later
filled with the protein's projected features (``SepitModel.embed_inputs``). Markers are matched to proteins in
order. Labels are the token ids on assistant turns (including the template's end-of-turn tokens, so the model
learns to stop) and -100 elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from sepit.data.instructions.record import PROTEIN_MARKER
from sepit.errors import InputError
from sepit.log import get_logger
from sepit.model.projector import pooled_length
from sepit.proteins import Protein, as_protein

log = get_logger(__name__)

PROTEIN_TOKEN = PROTEIN_MARKER  # the marker of the instruction records is the LLM token that holds a protein
PROTEIN_START = "<protein_start>"
PROTEIN_END = "<protein_end>"
SPECIAL_TOKENS = (PROTEIN_TOKEN, PROTEIN_START, PROTEIN_END)
IGNORE = -100
STANDARD_AA = "LAGVSERTIDPKQNFYMHWC"


@dataclass
class Example:
    """One encoded conversation: token ids with markers expanded, labels, and its proteins in marker order."""

    input_ids: list[int]
    labels: list[int]
    proteins: list[Protein]


def add_protein_tokens(tokenizer) -> int:
    """Register ``<protein>``, ``<protein_start>``, ``<protein_end>`` as special tokens; sets a pad token if none
    (the end-of-sequence token: padding is masked out, never fed as content). Returns how many tokens were new."""
    added = tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)},
                                         replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


class SepitProcessor:
    """Turns conversations and proteins into batches for :class:`sepit.model.SepitModel`.

    ``protein_tokenizer``: the ESM tokenizer (its vocabulary maps residues to ids); ``llm_tokenizer``: a fast HF
    tokenizer with a chat template and the protein tokens added (:func:`add_protein_tokens`).
    """

    def __init__(self, protein_tokenizer, llm_tokenizer, *, pool: int = 1, max_residues: int = 1022,
                 max_length: int | None = None) -> None:
        if not getattr(llm_tokenizer, "is_fast", False):
            raise ValueError("the LLM tokenizer must be a fast tokenizer (character offsets are needed for labels)")
        if not getattr(llm_tokenizer, "chat_template", None):
            raise ValueError("the LLM tokenizer has no chat template")
        self.protein_tokenizer = protein_tokenizer
        self.llm_tokenizer = llm_tokenizer
        self.pool = pool
        self.max_residues = max_residues
        self.max_length = max_length
        ids = llm_tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
        unk = llm_tokenizer.unk_token_id
        if any(i is None or (unk is not None and i == unk) for i in ids):
            raise ValueError("the LLM tokenizer lacks the protein tokens: call add_protein_tokens() first")
        self.protein_token_id, self.protein_start_id, self.protein_end_id = ids
        self.pad_token_id = llm_tokenizer.pad_token_id
        pt = protein_tokenizer
        self._cls, self._eos, self._pad = pt.cls_token_id, pt.eos_token_id, pt.pad_token_id
        self._mask, self._unk = pt.mask_token_id, pt.unk_token_id
        self._aa_ids = {c: pt.convert_tokens_to_ids(c) for c in STANDARD_AA}
        self._warned_crop = False

    # ---- proteins -------------------------------------------------------------------------------------------------
    @property
    def amino_acid_ids(self) -> list[int]:
        """ESM token ids of the 20 standard amino acids (used for random replacement in masked-residue training)."""
        return list(self._aa_ids.values())

    @property
    def mask_token_id(self) -> int:
        return int(self._mask)

    def _crop(self, p: Protein) -> Protein:
        if len(p.sequence) <= self.max_residues:
            return p
        if not self._warned_crop:
            log.warning("proteins longer than %d residues are cropped to their first %d", self.max_residues,
                        self.max_residues)
            self._warned_crop = True
        n = self.max_residues
        return replace(p, sequence=p.sequence[:n], coords=None if p.coords is None else p.coords[:n],
                       coord_mask=None if p.coord_mask is None else p.coord_mask[:n])

    def num_protein_tokens(self, protein: Any) -> int:
        """How many LLM slots a protein takes (its residue count after cropping, pooled)."""
        return pooled_length(min(len(as_protein(protein).sequence), self.max_residues), self.pool)

    def protein_batch(self, proteins: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Proteins → ESM inputs (P proteins, Lp = longest + 2):

        ``protein_input_ids`` (P, Lp) long, ``<cls>`` residues ``<eos>`` then ``<pad>``;
        ``protein_attention_mask`` (P, Lp) bool; ``protein_residue_mask`` (P, Lp) bool, True at real residues;
        ``coords`` (P, Lp, 3) float32 Å aligned to the tokens; ``coord_mask`` (P, Lp) bool.
        """
        prots = [self._crop(as_protein(p)) for p in proteins]
        n = len(prots)
        width = max((len(p.sequence) for p in prots), default=0) + 2
        ids = torch.full((n, width), self._pad, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.bool)
        res = torch.zeros((n, width), dtype=torch.bool)
        coords = torch.zeros((n, width, 3), dtype=torch.float32)
        cmask = torch.zeros((n, width), dtype=torch.bool)
        vocab = self.protein_tokenizer.get_vocab()
        for i, p in enumerate(prots):
            length = len(p.sequence)
            row = [self._cls] + [vocab.get(c, self._unk) for c in p.sequence] + [self._eos]
            ids[i, : length + 2] = torch.tensor(row)
            attn[i, : length + 2] = True
            res[i, 1 : length + 1] = True
            if p.coords is not None:
                coords[i, 1 : length + 1] = torch.from_numpy(p.coords)
                cmask[i, 1 : length + 1] = torch.from_numpy(p.coord_mask)
        return {"protein_input_ids": ids, "protein_attention_mask": attn, "protein_residue_mask": res,
                "coords": coords, "coord_mask": cmask}

    # ---- conversations --------------------------------------------------------------------------------------------
    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.llm_tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)

    def _assistant_spans(self, messages: list[dict[str, str]], full: str) -> list[tuple[int, int]]:
        """Character spans of each assistant turn in ``full``: render(prefix + generation prompt) .. render(turn)."""
        spans = []
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            if k == 0:
                raise InputError(None, "a conversation cannot start with an assistant turn")
            before = self._render(messages[:k], add_generation_prompt=True)
            upto = self._render(messages[: k + 1], add_generation_prompt=False)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise InputError(None, "the chat template does not render conversations incrementally, so "
                                       "assistant turns cannot be located for the loss mask")
            spans.append((len(before), len(upto)))
        return spans

    def encode_chat(self, messages: Sequence[Mapping[str, str]], proteins: Sequence[Any] = (), *,
                    add_generation_prompt: bool = False) -> Example:
        """One conversation (list of ``{"role", "content"}``; ``<protein>`` markers in user/system turns) and its
        proteins (one per marker, in order) → :class:`Example`. With ``add_generation_prompt`` the text ends with
        the assistant prompt (for generation)."""
        msgs = []
        for m in messages:
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"),
                                                                                                   str):
                raise InputError(None, "each message must be a mapping with string 'role' and 'content'")
            if m["role"] == "assistant" and PROTEIN_TOKEN in m["content"]:
                raise InputError(None, f"{PROTEIN_TOKEN} markers belong in user or system turns")
            for tok in (PROTEIN_START, PROTEIN_END):
                if tok in m["content"]:
                    raise InputError(None, f"message text must not contain {tok}")
            msgs.append({"role": m["role"], "content": m["content"]})
        prots = [self._crop(as_protein(p)) for p in proteins]
        markers = sum(m["content"].count(PROTEIN_TOKEN) for m in msgs)
        if markers != len(prots):
            raise InputError(None, f"the conversation has {markers} {PROTEIN_TOKEN} marker(s) but {len(prots)} "
                                   f"protein(s) were given")
        full = self._render(msgs, add_generation_prompt)
        spans = self._assistant_spans(msgs, full)
        enc = self.llm_tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, labels, j = [], [], 0
        for tid, (start, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
            if tid == self.protein_token_id:
                n = pooled_length(len(prots[j].sequence), self.pool)
                j += 1
                ids += [self.protein_start_id] + [self.protein_token_id] * n + [self.protein_end_id]
                labels += [IGNORE] * (n + 2)
                continue
            ids.append(tid)
            labels.append(tid if any(s <= start < e for s, e in spans) else IGNORE)
        if j != len(prots):  # the template dropped or duplicated a marker (e.g. it ignores system turns)
            raise InputError(None, f"the chat template rendered {j} {PROTEIN_TOKEN} marker(s) for {len(prots)} "
                                   f"protein(s)")
        if self.max_length is not None and len(ids) > self.max_length:
            raise InputError(None, f"conversation is {len(ids)} tokens long with its proteins, above max_length "
                                   f"{self.max_length}")
        return Example(ids, labels, prots)

    def collate(self, examples: Sequence[Example], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Examples → a batch: ``input_ids``, ``attention_mask``, ``labels`` (B, T) padded on ``padding_side``
        (right for training, left for generation) plus the protein keys of :meth:`protein_batch` for all proteins
        of the batch in order (example by example, marker by marker)."""
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        width = max((len(e.input_ids) for e in examples), default=0)
        b = len(examples)
        ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE, dtype=torch.long)
        attn = torch.zeros((b, width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e.input_ids)
            sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
            ids[i, sl] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[i, sl] = torch.tensor(e.labels, dtype=torch.long)
            attn[i, sl] = 1
        batch = {"input_ids": ids, "attention_mask": attn, "labels": labels}
        batch.update(self.protein_batch([p for e in examples for p in e.proteins]))
        return batch

    def __call__(self, conversations: Sequence[Sequence[Mapping[str, str]]], proteins: Sequence[Sequence[Any]], *,
                 add_generation_prompt: bool = False, padding_side: str | None = None) -> dict[str, torch.Tensor]:
        """Conversations and their proteins → a batch (left-padded when ``add_generation_prompt``)."""
        if len(conversations) != len(proteins):
            raise InputError(None, f"{len(conversations)} conversations but {len(proteins)} protein lists")
        examples = [self.encode_chat(c, p, add_generation_prompt=add_generation_prompt)
                    for c, p in zip(conversations, proteins)]
        side = padding_side or ("left" if add_generation_prompt else "right")
        return self.collate(examples, padding_side=side)

    def stage0_batch(self, proteins: Sequence[Any], captions: Sequence[str], text_encoder) -> dict[str, torch.Tensor]:
        """Stage-0 batch: protein keys + ``text_input_ids`` / ``text_attention_mask`` (B, T) of the captions
        (tokenized by the frozen text encoder's tokenizer); protein i is paired with caption i."""
        if len(proteins) != len(captions):
            raise InputError(None, f"{len(proteins)} proteins but {len(captions)} captions")
        batch = self.protein_batch(proteins)
        batch.update(text_encoder.tokenize(captions))
        return batch
