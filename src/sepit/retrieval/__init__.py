"""Retrieval-augmented prompts: a protein's nearest reference proteins (MMseqs2) and their annotations, given to the
model as context before the question and shown to users as provenance.

- :mod:`sepit.retrieval.index`: the index folder (``RetrievalIndex``, ``build_index``, ``copy_index``);
- :mod:`sepit.retrieval.retriever`: search + cache + cut-offs (``Retriever``);
- :mod:`sepit.retrieval.context`: the prompt text (``context_block``) and a question's task (``question_task``);
- :mod:`sepit.retrieval.config`: ``RetrievalConfig``, part of every model config.

Only the (torch-free, light) config is imported here: the model config needs it, and the rest pulls in the data
pipeline."""

from sepit.retrieval.config import RetrievalConfig

__all__ = ["RetrievalConfig"]
