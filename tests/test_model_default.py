"""The `default` preset (real ESM-2 t6 8M + SmolLM2-135M-Instruct + MiniLM) on a real protein with its real structure.

Slow: needs `sepit models fetch` to have installed the default models (the test fails, with that instruction, when
they are missing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sepit.errors import SepitError
from sepit.model import PROTEIN_TOKEN, Protein, build_model, default, load_text_encoder

CRAMBIN = Path(__file__).parent / "data" / "model" / "1CRN.cif.gz"  # PDB 1CRN chain A, see data/model/README.md
CRAMBIN_SEQ = "TTCCPSIVARSNFNVCRLPGTPEAICATYTGCIIIPGATCPGDYAN"


def _crambin() -> Protein:
    import gemmi

    st = gemmi.read_structure(str(CRAMBIN))
    chain = st[0]["A"]
    seq = gemmi.one_letter_code([r.name for r in chain])
    coords, mask = np.zeros((len(seq), 3), np.float32), np.zeros(len(seq), bool)
    for i, res in enumerate(chain):
        ca = res.find_atom("CA", "*")
        if ca is not None:
            coords[i], mask[i] = (ca.pos.x, ca.pos.y, ca.pos.z), True
    return Protein(seq, coords, mask)


@pytest.fixture(scope="module")
def model():
    from sepit.assets import model_path

    try:
        for name in ("esm2_t6_8M", "smollm2_135m_instruct", "minilm_l6_v2"):
            model_path(name)
    except SepitError as e:
        pytest.fail(f"the default models are needed for this test: {e}")
    return build_model(default())


@pytest.mark.slow
def test_default_preset_forward_backward_on_crambin(model) -> None:
    protein = _crambin()
    assert protein.sequence == CRAMBIN_SEQ and protein.coord_mask.all()
    ca = protein.coords
    assert 3.7 < float(np.linalg.norm(ca[1] - ca[0])) < 3.9  # consecutive Cα are 3.8 Å apart: real coordinates

    conv = [{"role": "user", "content": f"{PROTEIN_TOKEN}\nWhat is the function of this protein?"},
            {"role": "assistant", "content": "Crambin is a small hydrophobic seed storage protein."}]
    batch = model.processor([conv], [[protein]])
    assert int((batch["input_ids"] == model.processor.protein_token_id).sum()) == 46
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(batch)
    assert torch.isfinite(out.loss) and 0.0 < float(out.loss.detach()) < 20.0 and out.num_tokens > 5
    out.loss.backward()
    groups = model.param_groups()
    for g in ("plm", "structure", "projector", "llm"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in groups[g]), g
    model.zero_grad(set_to_none=True)
    model.eval()

    with torch.no_grad():
        # structure changes the features; without it the encoder is plain ESM-2
        pb = model.processor.protein_batch([protein])
        with_s = model.encode(pb).penultimate
        plain = model.encoder.esm(pb["protein_input_ids"], attention_mask=pb["protein_attention_mask"].long(),
                                  output_hidden_states=True).hidden_states[-2]
        no_s = model.encode(model.processor.protein_batch([protein.sequence])).penultimate
        torch.testing.assert_close(no_s, plain, atol=1e-4, rtol=1e-4)
        assert (with_s - no_s).abs().max() > 1e-4
        answer = model.chat([conv[:1]], [[protein]], max_new_tokens=8)
        p_yes = model.yes_no_probability(model.processor([[{"role": "user", "content": f"{PROTEIN_TOKEN}\nIs this "
                                                            "a protein? Answer yes or no."}]], [[protein]],
                                                         add_generation_prompt=True))
    assert isinstance(answer[0], str) and answer[0].strip()
    assert 0.0 < float(p_yes[0]) < 1.0


@pytest.mark.slow
def test_default_stage0_losses_on_crambin(model) -> None:
    text = load_text_encoder("minilm_l6_v2")
    batch = model.processor.stage0_batch([_crambin(), "MKTAYIAKQRQISFVKSHFSRQ"],
                                         ["Crambin, a plant seed protein.", "A bacterial transcription regulator."],
                                         text)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        batch["text_features"] = text(batch.pop("text_input_ids"), batch.pop("text_attention_mask"))
    losses = model.stage0_losses(batch, {"contrastive": 1.0, "denoise": 1.0, "mlm": 1.0},
                                 generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values()) and losses["denoise"] > 0
    losses["loss"].backward()
    assert any(p.grad is not None for _, p in model.param_groups()["heads"])
    model.zero_grad(set_to_none=True)
