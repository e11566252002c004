"""The SEPIT model: structure-aware ESM-2 encoder, stage-0 heads, projector, LLM fusion, MoE upcycling.

>>> from sepit.model import build_model, tiny
>>> model = build_model(tiny())
>>> batch = model.processor([[{"role": "user", "content": "<protein>\\nWhat does it do?"},
...                            {"role": "assistant", "content": "It binds ATP."}]], [["MKTAYIAKQR"]])
>>> model(batch).loss

See docs/model.md for the API, batch keys and shapes.
"""

from sepit.model.build import PRESETS, assemble, build_model, build_skeleton, default, paper, tiny, with_moe
from sepit.model.checkpoint import architecture_differences, checkpoint_config, load_model, load_weights, save_model
from sepit.model.config import ModelConfig
from sepit.model.encoder import EncoderOutput, StructureAwareEsm
from sepit.model.fusion import SepitModel, SepitOutput
from sepit.model.heads import ContrastiveHead, DenoisingHead, MaskedResidueHead, Stage0Heads
from sepit.model.moe import MoEFeedForward, upcycle_mlp, upcycle_to_moe
from sepit.model.params import GROUPS, STAGE_GROUPS, param_groups, parameter_counts
from sepit.model.processor import PROTEIN_END, PROTEIN_START, PROTEIN_TOKEN, Example, SepitProcessor, add_protein_tokens
from sepit.model.projector import Projector
from sepit.model.structure import GaussianBasis, NodeEncoding, StructureBias, StructureModule
from sepit.model.text_encoder import TextEncoder, load_text_encoder
from sepit.proteins import Protein, as_protein

__all__ = [
    "GROUPS", "PRESETS", "PROTEIN_END", "PROTEIN_START", "PROTEIN_TOKEN", "STAGE_GROUPS", "ContrastiveHead",
    "DenoisingHead", "EncoderOutput", "Example", "GaussianBasis", "MaskedResidueHead", "ModelConfig",
    "MoEFeedForward", "NodeEncoding", "Projector", "Protein", "SepitModel", "SepitOutput", "SepitProcessor",
    "Stage0Heads", "StructureAwareEsm", "StructureBias", "StructureModule", "TextEncoder", "add_protein_tokens",
    "architecture_differences", "as_protein", "assemble", "build_model", "build_skeleton", "checkpoint_config",
    "default", "load_model", "load_text_encoder", "load_weights", "param_groups", "parameter_counts", "paper",
    "save_model", "tiny", "upcycle_mlp", "upcycle_to_moe", "with_moe",
]
