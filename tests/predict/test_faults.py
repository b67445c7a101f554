"""Faults while writing, through real CLI processes: a full disk leaves nothing half-written, and
a batch killed midway leaves only whole outputs and is completed by running it again."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from predict_data import SHAPE, affine_for, synthetic_ct, write_nifti

from cli_runner import cli_command, cli_env, run_cli

BATCH = 8


def _limit_file_size(limit: int):
    def in_child() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    return in_child


def test_a_full_disk_leaves_nothing_half_written(tmp_path, model_dir):
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(5), affine_for("RAS"))
    out = tmp_path / "out"

    # 2 KB: the label map (~200 bytes) fits, its report (~7 KB) does not.
    run = subprocess.run(
        cli_command("predict", "-i", source, "-o", out, "--model", model_dir),
        capture_output=True,
        encoding="utf-8",
        env=cli_env(),
        preexec_fn=_limit_file_size(2048),
        timeout=300,
        check=False,
    )

    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"sparsekits: error: {out / 'scan.json'}: File too large"
    ]
    assert not out.exists()  # the label map written before it was removed, then the folder


def test_a_batch_killed_midway_is_whole_and_a_rerun_completes_it(tmp_path, model_dir):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    for k in range(BATCH):
        write_nifti(inputs / f"scan{k}.nii.gz", synthetic_ct(k), affine_for("RAS"))
    command = ("predict", "-i", inputs, "-o", out, "--model", model_dir)

    process = subprocess.Popen(
        cli_command(*command), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    # A report renamed into place, not its temporary (hidden, which a glob still matches).
    while not _reports(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert 0 < len(_whole_outputs(out)) < BATCH  # killed after the first case, before the last
    # What a kill mid-write leaves: the dead process's temporary; a live process's is kept.
    (out / f".tmp-{process.pid}-scan7.nii.gz").write_bytes(b"half a label map")
    live = out / f".tmp-{os.getpid()}-other.nii.gz"
    live.write_bytes(b"being written")

    rerun = run_cli(*command)

    assert rerun.returncode == 0, rerun.stderr
    assert _whole_outputs(out) == [f"scan{k}" for k in range(BATCH)]
    assert [path.name for path in out.glob(".tmp-*")] == [live.name]


def _reports(out: Path) -> list[Path]:
    return [path for path in out.glob("*.json") if not path.name.startswith(".")]


def _whole_outputs(out: Path) -> list[str]:
    """The cases whose label map and report are both there; every output there must be whole
    (temporaries, hidden, are not outputs)."""
    outputs = [path for path in out.iterdir() if not path.name.startswith(".")]
    for path in outputs:
        if path.name.endswith(".nii.gz"):
            assert np.asarray(nib.load(path).dataobj).shape == SHAPE
        else:
            assert json.loads(path.read_text())["volumes_ml"]
    names = [path.name.removesuffix(".nii.gz") for path in outputs if path.suffix == ".gz"]
    return sorted(name for name in names if (out / f"{name}.json").exists())
