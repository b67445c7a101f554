"""Fuzzing: corrupted NIfTI headers and DICOM files (fuzz_inputs.py, a fixed seed) through one
batch prediction, a real CLI process (so torch is imported once) with a time limit per case and
a memory limit: each input ends in a one-line refusal or a prediction on its own grid, never a
traceback, a hang or a runaway allocation."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import nibabel as nib
import numpy as np
from fuzz_inputs import write_fuzz_inputs
from predict_data import affine_for, synthetic_ct

from cli_runner import cli_env
from sparsekits.data.io import read_image
from sparsekits.layout import image_stem

CASES = 200
SEED = 23
PER_CASE_S = 20  # the slowest case takes about 1 s
MEMORY_BYTES = 4 << 30  # address space: torch and the largest case need under 2 GiB
_OURS = ("sparsekits: error: ", "sparsekits: warning: ", "sparsekits predict: ", "predict: ")

# `sparsekits ARGS` with SIGALRM raising TimeoutError in a case that runs past PER_CASE_S, and a
# marker before any failure other than a refusal (InputError), which the batch would take.
DRIVER = """
import resource, signal, sys, traceback
from sparsekits import cli
from sparsekits.errors import InputError
from sparsekits.predict import pipeline

limit_s, memory = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def over_time(signum, frame):
    raise TimeoutError(f"over the per-case limit of {limit_s} s")


def limited(predictor, source, *args, predict_file=pipeline.predict_file, **kwargs):
    signal.alarm(limit_s)
    try:
        return predict_file(predictor, source, *args, **kwargs)
    except InputError:
        raise
    except BaseException as error:
        print(f"UNEXPECTED {source}: {error!r}", file=sys.stderr)
        traceback.print_exc()
        raise
    finally:
        signal.alarm(0)


signal.signal(signal.SIGALRM, over_time)
pipeline.predict_file = limited
sys.exit(cli.main(sys.argv[3:]))
"""


def test_corrupted_inputs_end_in_a_refusal_or_a_prediction_on_their_grid(tmp_path, model_dir):
    folder, out = tmp_path / "inputs", tmp_path / "out"
    inputs = write_fuzz_inputs(folder, CASES, SEED, synthetic_ct(0), affine_for("LPS"))

    run = subprocess.run(
        [sys.executable, "-c", DRIVER, str(PER_CASE_S), str(MEMORY_BYTES), "predict",
         "-i", str(folder), "-o", str(out), "--model", str(model_dir)],
        capture_output=True, encoding="utf-8", errors="replace", env=cli_env(), timeout=600,
        check=False,
    )  # fmt: skip

    assert "Traceback" not in run.stderr and "UNEXPECTED" not in run.stderr, run.stderr[-4000:]
    lines = run.stderr.splitlines()
    # Nothing but one line per refusal or warning, the summary and the progress bar.
    others = [line for line in lines if line.strip() and not line.startswith(_OURS)]
    assert not others, others[:20]
    refusal = re.compile(rf"^sparsekits: error: {re.escape(str(folder))}/([^/:]+)[/:]")
    refused = Counter(match[1] for match in map(refusal.match, lines) if match)
    assert set(refused.values()) == {1}  # each refusal once
    predicted = [path for path in inputs if path.name not in refused]
    for path in predicted:
        written = nib.load(out / f"{image_stem(path)}.nii.gz")
        grid = read_image(path).grid
        assert written.shape == grid.shape
        np.testing.assert_allclose(written.affine, grid.affine, atol=1e-4)
        assert (out / f"{image_stem(path)}.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{image_stem(path)}{suffix}" for path in predicted for suffix in (".json", ".nii.gz")
    )
    assert run.returncode == 1
    assert lines[-1] == f"sparsekits predict: {len(refused)} of {CASES} inputs failed"
    assert len(refused) > CASES // 5 and len(predicted) > CASES // 5  # both outcomes exercised
