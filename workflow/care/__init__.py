"""care: predict and explain the client-perceived therapeutic alliance (the CARE paper).

One module per stage; the Snakemake rules call them through the ``care`` command line.
"""

from pathlib import Path

__version__ = "0.1.0"

#: ``workflow/`` inside the source tree: prompts, instruments, schemas, DeepSpeed configs.
WORKFLOW_DIR = Path(__file__).resolve().parent.parent
