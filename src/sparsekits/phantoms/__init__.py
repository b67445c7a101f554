"""Synthetic abdominal CT with kidney, tumour and cyst labels, for tests, the demo and training.

``generate`` builds cases (synthetic kidneys, or a body around real KiTS23 label maps);
``body`` paints the abdomen; ``kidney`` the kidneys, renal sinus, tumours and cysts; ``tissues``
holds the HU of every tissue per contrast phase with its sources; ``lesions`` the number and size
of tumours and cysts, measured on KiTS23.
"""

from sparsekits.phantoms.generate import (
    DEFAULT,
    Phantom,
    PhantomConfig,
    case_seed_of,
    make_phantom,
    save_preview,
    write_case,
    write_phantom_dataset,
)
from sparsekits.phantoms.tissues import PHASES

__all__ = [
    "DEFAULT",
    "PHASES",
    "Phantom",
    "PhantomConfig",
    "case_seed_of",
    "make_phantom",
    "save_preview",
    "write_case",
    "write_phantom_dataset",
]
