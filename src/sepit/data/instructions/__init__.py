"""Instructions: captions and QA records composed from protein annotations (templates are YAML data).

>>> catalog = Catalog.build(entries, go_info)           # every annotation value of the build (for hard negatives)
>>> records = protein_instructions(entry, catalog, load_templates(), split="train", seed=0)
"""

from .caption import compose_caption, structure_note
from .catalog import Catalog
from .negatives import contradicts, hard_negative
from .qa import QAOptions, protein_instructions, task_facts
from .record import PROTEIN_MARKER, Instruction, conversation
from .templates import TASKS, Templates, load_templates

__all__ = ["PROTEIN_MARKER", "TASKS", "Catalog", "Instruction", "QAOptions", "Templates", "compose_caption",
           "contradicts", "conversation", "hard_negative", "load_templates", "protein_instructions",
           "structure_note", "task_facts"]
