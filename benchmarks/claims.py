"""The paper's efficiency claims, measured: sparse vs its dense twin per stage, the full two-stage
prediction vs nnU-Net v2 3d_fullres (with and without TTA), and a sparsity sweep.

Writes the section "claims" of BENCHMARKS.md (every input measured so far) and the PNGs and JSON
under docs/benchmarks/<input>_<device>/.

    python benchmarks/claims.py                     # both inputs (quiet machine)
    python benchmarks/claims.py --inputs real       # one input; the other's section is kept
    python benchmarks/claims.py --quick             # sparse runs once too, no nnU-Net TTA
    python benchmarks/claims.py --device cuda       # the same tables on a GPU (section claims-cuda)
    python benchmarks/claims.py --from-json         # re-render from the saved JSON, no measuring

Inputs (from ../shared/data, never copied into the repo): the real abdominal CT
ct-samples/abdomen_ct_3mm.nii.gz with its TotalSegmentator organ map (kidneys 2, 3), and a
KiTS-size phantom (611 x 512 x 512 at 0.5 x 0.92 x 0.92 mm) built around the real KiTS23 label map
kits23-labels/case_00000.nii.gz (kidneys 1, 2, 3). nnU-Net needs its own venv:
benchmarks/install_nnunet.sh. A --quick run of the real CT takes about 7 min on 2 quiet cores (35
min with other jobs at load 8-15); the headline numbers (stage 2, two-stage, nnU-Net) come first.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from _sections import command_line, update_section
from sparsekits.bench.inputs import ALL_HU, SweepPoint
from sparsekits.bench.pipeline import BenchConfig, run_benchmark, write_outputs
from sparsekits.bench.render import render_markdown
from sparsekits.fileio import write_json_atomic
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIGURES = ROOT / "docs" / "benchmarks"

# Sparse runs: median of 3 after a warm-up. The slow runs (each dense twin, the full two-stage
# prediction, nnU-Net patches, sweep points) are measured once after a warm-up, so that one input
# stays near 15-20 min on 2 quiet cores; nnU-Net's time is per patch times its patch count anyway.
FULL = BenchConfig(
    repeats=3,
    dense_repeats=1,
    two_stage_repeats=1,
    sweep_repeats=1,
    nnunet_repeats=1,
    nnunet_tta_repeats=1,
)
# A run that fits a busy machine: one measured run after the warm-up everywhere, four sweep points,
# nnU-Net without TTA only (with TTA it runs 8 forward passes per patch).
QUICK = replace(
    FULL,
    repeats=1,
    nnunet_tta_repeats=0,
    sweep=(
        SweepPoint((30.0, 40.0)),
        SweepPoint((0.0, 100.0)),
        SweepPoint(SSCN_TWOSTAGE.stage(2).sparsify.bounds),
        SweepPoint(ALL_HU, inside_roi=False),
    ),
)


@dataclass(frozen=True)
class ClaimInput:
    name: str
    description: str
    kidney_labels: tuple[int, ...]

    def files(self, work: Path) -> tuple[Path, Path]:
        """(CT, label map) paths, writing the phantom into ``work`` when needed."""
        if self.name == "real_ct":
            folder = SHARED / "ct-samples"
            return folder / "abdomen_ct_3mm.nii.gz", folder / "abdomen_ct_3mm_organs.nii.gz"
        return _kits_size_phantom(work)


INPUTS = {
    "real": ClaimInput(
        "real_ct",
        "real abdominal CT (TotalSegmentator sample, 3 mm, non-contrast), kidney ROI from its "
        "organ map",
        (2, 3),
    ),
    "phantom": ClaimInput(
        "kits_phantom",
        "KiTS-size phantom around the real KiTS23 label map of case_00000",
        (1, 2, 3),
    ),
}


def _kits_size_phantom(work: Path) -> tuple[Path, Path]:
    from sparsekits.data.io import read_label_map
    from sparsekits.phantoms import make_phantom, write_case

    labels = read_label_map(SHARED / "kits23-labels" / "case_00000.nii.gz")
    phantom = make_phantom(0, labels=labels.array, affine=labels.grid.affine)
    case = write_case(work / "case_00000", phantom)
    return case / "imaging.nii.gz", case / "segmentation.nii.gz"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", choices=("real", "phantom", "both"), default="both")
    parser.add_argument("--preset", choices=("paper", "small"), default="paper")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="1 run after warm-up, 4 sweep points")
    parser.add_argument("--no-nnunet", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="re-render BENCHMARKS.md and the PNGs from the saved results.json, measuring nothing",
    )
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is not present: these benchmarks need the shared real data")
    config = QUICK if args.quick else FULL
    if args.no_nnunet:
        config = replace(config, nnunet=False)
    if args.no_sweep:
        config = replace(config, sweep=())
    names = ("real", "phantom") if args.inputs == "both" else (args.inputs,)
    for name in names:
        claim = INPUTS[name]
        out = _out_dir(claim, args.device)
        if args.from_json:
            results = json.loads((out / "results.json").read_text())
            results.setdefault("command", _command(args, name))
            write_outputs(results, out, out / "results.json")
        else:
            results = _measure(claim, out, args, config)
            results["command"] = _command(args, name)
            write_json_atomic(out / "results.json", results)
        (out / "benchmark.md").unlink(missing_ok=True)  # the section below holds it
    # Every input measured so far on this device, so that one input's re-run keeps the other's.
    sections = [
        _section(claim, json.loads((_out_dir(claim, args.device) / "results.json").read_text()))
        for claim in INPUTS.values()
        if (_out_dir(claim, args.device) / "results.json").is_file()
    ]
    key = "claims" if args.device == "cpu" else f"claims-{args.device}"
    update_section(key, _header() + "\n\n" + "\n\n".join(sections))


def _out_dir(claim: ClaimInput, device: str) -> Path:
    return FIGURES / f"{claim.name}_{device}"


def _measure(claim: ClaimInput, out: Path, args, config: BenchConfig) -> dict:
    with tempfile.TemporaryDirectory(prefix="sparsekits-claims-") as work:
        ct, labels = claim.files(Path(work))
        return run_benchmark(
            ct,
            preset=args.preset,
            device=args.device,
            json_path=out / "results.json",
            out_dir=out,
            labels=labels,
            kidney_labels=claim.kidney_labels,
            config=config,
        )


def _section(claim: ClaimInput, results: dict) -> str:
    figures = "\n\n".join(
        f"![{Path(path).stem}]({Path(path).relative_to(ROOT)})" for path in results["figures"]
    )
    command = results.get("command", "")
    return (
        f"### {claim.description}\n\nCommand: `{command}`\n\n{render_markdown(results)}\n{figures}"
    )


def _command(args, name: str) -> str:
    """The command that measures input ``name`` alone, as this run did (not re-rendering)."""
    return command_line(
        __file__, argparse.Namespace(**{**vars(args), "inputs": name}), ("from_json",)
    )


def _header() -> str:
    return """## The paper's efficiency claims (issue 7)

All inputs: `python benchmarks/claims.py` (each input's own command is given below); per input
it runs what `sparsekits benchmark --input CT --labels LABELS --kidney-labels ... --out DIR`
runs. Networks: the paper preset (27.5 M parameters), random weights,
one network per stage loaded into both twins (`dense.load_state_dict(sparse.state_dict())`).
Stage 1 sees the whole scan on the 1.99 mm grid (dense twin: its body box); stage 2 the largest
dilated kidney ROI at 0.78 mm (dense twin: the crop box). Time: median of the runs after a
warm-up, under `torch.no_grad` as in the predictor (the engine's CPU worker threads do not share
the caller's thread-local inference mode); CPU memory: peak RSS of a fresh process per
measurement. The machine was shared with other engineers' jobs: wall-clock times are noisy, the
CPU-time ratio and the peaks less so.

**nnU-Net v2 baseline.** `nnunetv2` (PyPI) runs unmodified with our torch 2.13.0 CPU build, but
not in the project's venv: `pip install nnunetv2` pulls timm -> torchvision, which replace torch
with a newer CUDA build. `bash benchmarks/install_nnunet.sh` makes a separate venv `.venv-bench`
(gitignored; or point `SPARSEKITS_NNUNET_PYTHON` at another one):

```
python3 -m venv .venv-bench
.venv-bench/bin/pip install torch==2.13.0            # the project's CPU build
.venv-bench/bin/pip install numpy scipy scikit-image scikit-learn pandas SimpleITK nibabel \\
    matplotlib tqdm einops blosc2 connected-components-3d threadpoolctl pillow future tifffile \\
    requests yacs seaborn graphviz psutil
.venv-bench/bin/pip install --no-deps nnunetv2 dynamic_network_architectures acvl_utils \\
    batchgenerators batchgeneratorsv2
.venv-bench/bin/pip install --no-deps -e .
```

(`pip install -e .[bench]` cannot express `--no-deps`, hence the script.) timm and torchvision
are not installed; the PlainConvUNet and `nnUNetPredictor` do not import them. The benchmark
builds the KiTS23 3d_fullres plan in memory (6-stage PlainConvUNet, features 32-320, kernel 3,
2 convs per stage, instance norm, leaky ReLU, patch 128^3, spacing 1.0 x 0.78 x 0.78 mm), hands
it to `nnUNetPredictor.manual_initialization` and times
`predict_sliding_window_return_logits` (step 0.5, Gaussian weighting, 1 fold, random weights)."""


if __name__ == "__main__":
    main()
