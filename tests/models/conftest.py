"""tests/predict on sys.path, so that these tests build their model folders with the prediction
tests' helper (``predict_data.save_random_model``): one tiny model folder, written one way."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "predict"))
