"""sepit: Structure-Enhanced Protein Instruction Tuning.

A structure-aware ESM-2 protein encoder, projected into a causal LLM, instruction-tuned to answer questions about
proteins (Wu et al., arXiv 2410.03553). See README.md for the command line; the Python API lives in the subpackages.
"""

from sepit.version import __version__

__all__ = ["__version__", "load"]


def load(path=None, *, device=None, precision="auto"):  # lazy: torch/transformers load only with a model
    """A trained model ready for questions (``sepit.load(DIR).ask(protein, question)``); see :func:`sepit.api.load`."""
    from sepit.api import load as _load

    return _load(path, device=device, precision=precision)
