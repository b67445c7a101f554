"""The ``sparsekits`` command: a thin layer over the importable API (one function per command).

Exit codes: 0 done; 1 failed (an input of a batch, a write: a full disk); 2 refused (bad input or
options, in one line naming the file and the problem); 130 interrupted. A command that fails
removes the folders it created and left empty. Options are never abbreviated: ``--fold`` is not
``--folds``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparsekits.device import DEVICE_CHOICES
from sparsekits.errors import InputError, one_line
from sparsekits.fileio import check_folder_creatable, outermost_missing, remove_empty_folders
from sparsekits.layout import OUTPUT_SUFFIXES
from sparsekits.methods import DEFAULT_METHOD, method_names
from sparsekits.models.config import PRESETS
from sparsekits.phantoms.tissues import PHASES


def _phantom(args: argparse.Namespace) -> int:
    from sparsekits.phantoms import DEFAULT, write_phantom_dataset

    config = DEFAULT if args.phase is None else DEFAULT.with_phase(args.phase)
    write_phantom_dataset(
        args.out, n_cases=args.cases, labels_from=args.labels_from, seed=args.seed, config=config
    )
    return 0


def _plan_arg(args: argparse.Namespace):
    """The plan of ``--plan FILE``, or None when not given."""
    from sparsekits.plan import load_plan

    return None if args.plan is None else load_plan(args.plan)


def _plan(args: argparse.Namespace) -> int:
    from sparsekits.plan import default_plan

    try:
        plan = default_plan(args.method, args.preset)
    except ValueError as error:
        raise InputError(args.preset, str(error)) from error
    if args.output.is_dir():
        raise InputError(args.output, "is a folder; give a file name such as plan.json")
    plan.save(args.output)
    print(f"sparsekits plan: {plan.method} -> {args.output}", file=sys.stderr)
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from sparsekits.data.preprocess import preprocess_dataset
    from sparsekits.plan import default_plan

    plan = _plan_arg(args) or default_plan()
    roles = (plan.role(args.stage),) if args.stage else None
    report = preprocess_dataset(args.dataset, args.out, plan, roles, workers=args.workers)
    return 1 if report.failures else 0


# train options that change the plan's recipe for the stage (None: keep the plan's)
_RECIPE_OPTIONS = (
    "epochs",
    "samples_per_epoch",
    "accumulation",
    "lr",
    "loss",
    "lesion_oversampling",
    "patch_vox",
    "augment",
)


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from sparsekits.train.trainer import TrainConfig, base_plan, train

    plan = _plan_arg(args)
    changes = {key: getattr(args, key) for key in _RECIPE_OPTIONS}
    changes = {key: value for key, value in changes.items() if value is not None}
    recipe = None
    if changes:
        base = base_plan(args.data, plan)
        recipe = dataclasses.replace(base.stage(args.stage).recipe, **changes)
        try:  # refuse a bad option before anything is written
            base.with_stage(args.stage, recipe=recipe)
        except ValueError as error:
            raise InputError("train", f"invalid recipe option: {error}") from error
    train(
        TrainConfig(
            data=args.data,
            stage=args.stage,
            fold=args.fold,
            out=args.out,
            plan=plan,
            network=args.preset,
            recipe=recipe,
            device=args.device,
            resume=args.resume,
            seed=args.seed,
            num_workers=args.workers,
            val_every=args.val_every,
            val_samples=args.val_samples,
            checkpoint_every=args.checkpoint_every,
            stop_after_steps=args.stop_after_steps,
        )
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sparsekits.predict.pipeline import predict

    summary = predict(
        args.input,
        args.output,
        model_dir=args.model,
        device=args.device,
        folds=args.folds,
        tta=args.tta,
        save_probabilities=args.save_probabilities,
        overlay=args.overlay,
        plan=_plan_arg(args),
        output_types=_flat_unique(args.output_type) if args.output_type else None,
    )
    return 1 if summary.failures else 0


def _output_types(text: str) -> list[str]:
    """``--output-type`` NAME or a comma list of names (layout's OUTPUT_SUFFIXES)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in OUTPUT_SUFFIXES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose from {', '.join(OUTPUT_SUFFIXES)} (or a comma list)"
        )
    return names


def _flat_unique(lists: list[list[str]]) -> tuple[str, ...]:
    """The names of repeated options' lists, each once, in the order first given."""
    return tuple(dict.fromkeys(name for names in lists for name in names))


def _model_assemble(args: argparse.Namespace) -> int:
    from sparsekits.models.bundle import assemble_model

    out = assemble_model(args.runs, args.output)
    print(f"sparsekits model assemble: {len(args.runs)} runs -> {out}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sparsekits.evaluate.kits23 import evaluate_folders

    evaluate_folders(
        args.pred_dir, args.gt_dir, output_csv=args.output, roi_dir=args.roi, workers=args.workers
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sparsekits.demo import run_demo

    run_demo(args.out, quick=args.quick, method=args.method)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from sparsekits.compare import parse_models, run_compare

    run_compare(
        args.out,
        tuple(args.methods),
        budget_min=args.budget_min,
        models=parse_models(args.model),
        quick=args.quick,
        seed=args.seed,
        device=args.device,
    )
    print(f"compare: report -> {args.out / 'compare.md'}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from sparsekits.bench.pipeline import run_benchmark
    from sparsekits.plan import default_plan

    run_benchmark(
        args.input,
        stage=args.stage,
        preset=args.preset,
        plan=_plan_arg(args) or default_plan(),
        device=args.device,
        json_path=args.json,
        out_dir=args.out,
        labels=args.labels,
        kidney_labels=args.kidney_labels,
    )
    return 0


# The options that name what a command writes.
_OUTPUT_OPTIONS = ("out", "output", "json")
_DEVICE_HELP = f"{DEVICE_CHOICES}; refused when this machine has no such device (default: cpu)"


class _Parser(argparse.ArgumentParser):
    """A parser (and, through add_subparsers, every subparser) that takes no abbreviations:
    ``--fold 0`` must not silently mean ``--folds 0``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparsekits", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write a synthetic CT dataset in the KiTS23 layout")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cases", type=int, default=8)
    p.add_argument(
        "--labels-from",
        type=Path,
        default=None,
        help="folder of real KiTS23 label maps to take kidney geometry from",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--phase",
        choices=PHASES,
        default=None,
        help="contrast phase of every case (default: 70%% arterial, 30%% nephrographic)",
    )
    p.set_defaults(func=_phantom)

    p = sub.add_parser("plan", help="write a method's default plan (to edit, then --plan FILE)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--method", choices=method_names(), default=DEFAULT_METHOD)
    p.add_argument("--preset", default=None, help="one of the method's plans (default: its first)")
    p.set_defaults(func=_plan)

    p = sub.add_parser("preprocess", help="write the sparse samples of a dataset into a cache")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage", default=None, help="a stage of the plan's method (default: all)")
    p.add_argument("--workers", type=int, default=1)
    _add_plan_option(p)
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("train", help="train one stage on one cross-validation fold")
    p.add_argument("--data", type=Path, required=True, help="preprocessed cache or dataset")
    p.add_argument(
        "--stage", required=True, help="a stage of the plan's method by role (roi, fine) or number"
    )
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    _add_plan_option(p, "default: the cache's plan")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: the plan's")
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint_last.pt")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per rank")
    p.add_argument("--val-every", type=int, default=1, help="epochs between validations")
    p.add_argument(
        "--val-samples",
        type=int,
        help="validate on at most this many samples, spread over the fold's (default: all)",
    )
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimiser steps between saves")
    p.add_argument(
        "--stop-after-steps", type=int, default=None, help="stop (resumable) after N steps"
    )
    recipe = p.add_argument_group("recipe (default: the plan's recipe for the stage)")
    recipe.add_argument("--epochs", type=int, default=None)
    recipe.add_argument(
        "--samples-per-epoch", type=int, default=None, help="plan's default: one pass over the fold"
    )
    recipe.add_argument("--accumulation", type=int, default=None, help="samples per step")
    recipe.add_argument("--lr", type=float, default=None)
    recipe.add_argument(
        "--loss", default=None, help="one of the method's losses (sscn-twostage: dice, dice+bce)"
    )
    recipe.add_argument(
        "--lesion-oversampling",
        type=float,
        default=None,
        help="share of draws forced onto samples holding a tumour or cyst (nnU-Net: 0.33)",
    )
    recipe.add_argument(
        "--patch-vox", type=int, default=None, help="train on cubes of N voxels (stage grid)"
    )
    recipe.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None, help="augmentation"
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "predict", help="segment CT scans (NIfTI, NRRD, MetaImage file, DICOM folder or a folder)"
    )
    p.add_argument("-i", "--input", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    p.add_argument("--folds", default="all", help="'all' or a comma list such as 0,1")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument("--save-probabilities", action="store_true")
    p.add_argument("--overlay", action="store_true", help="write PNG overlays")
    p.add_argument(
        "--output-type",
        type=_output_types,
        action="append",
        metavar="TYPE[,TYPE]",
        help=f"label maps to write: {', '.join(OUTPUT_SUFFIXES)} (a DICOM-SEG of a DICOM series "
        "input); repeatable or a comma list (default: the format of -o's file name, else the "
        "input's, NIfTI for a DICOM series)",
    )
    _add_plan_option(p, "checked against the model's own plan, which prediction uses")
    p.set_defaults(func=_predict)

    p = sub.add_parser("model", help="model folders: assemble one from training runs")
    model = p.add_subparsers(dest="model_command", required=True)
    q = model.add_parser("assemble", help="MODEL folder from training runs (both stages, folds)")
    q.add_argument("runs", type=Path, nargs="+", help="training run folders (RUN/model inside)")
    q.add_argument("-o", "--output", type=Path, required=True)
    q.set_defaults(func=_model_assemble)

    p = sub.add_parser("evaluate", help="KiTS23 Dice and Surface Dice of predictions")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("gt_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("evaluation.csv"))
    p.add_argument("--roi", type=Path, default=None, help="folder of stage-1 ROI masks")
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("demo", help="phantoms -> train every stage -> predict -> evaluate")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--method", choices=method_names(), default=DEFAULT_METHOD)
    p.add_argument("--quick", action="store_true", help="a shrunken run that checks every step")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "compare", help="methods side by side: train, predict and score on the same phantoms"
    )
    p.add_argument("--out", type=Path, default=Path("compare_out"))
    p.add_argument(
        "--methods",
        nargs="+",
        choices=method_names(),
        default=list(method_names()),
        help="methods to compare (default: all)",
    )
    p.add_argument(
        "--budget-min",
        type=float,
        default=15.0,
        help="training minutes of all methods together on a quiet 2-core machine (default 15): "
        "scales each method's demo preset",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="METHOD=FOLDER",
        help="a trained model folder for METHOD (not trained here); repeatable",
    )
    p.add_argument("--seed", type=int, default=0, help="phantoms and training draws (default 0)")
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    p.add_argument("--quick", action="store_true", help="a shrunken run that checks every step")
    p.set_defaults(func=_compare)

    p = sub.add_parser("benchmark", help="sparse vs dense twin vs nnU-Net sliding window")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--stage", choices=("1", "2", "both"), default="both")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: the plan's")
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    _add_plan_option(p)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmark_out"))
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="label map on the CT's grid that places the kidney ROI (needed for stage 2)",
    )
    p.add_argument(
        "--kidney-labels",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=(1, 2, 3),
        help="label values of the kidneys in --labels (default 1,2,3: KiTS23; "
        "TotalSegmentator v1: 2,3)",
    )
    p.set_defaults(func=_benchmark)
    return parser


def _add_plan_option(parser: argparse.ArgumentParser, default: str = "") -> None:
    note = default or f"default: the {DEFAULT_METHOD} plan (sparsekits plan -o FILE writes it)"
    parser.add_argument("--plan", type=Path, default=None, help=f"a plan JSON file; {note}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outputs = [getattr(args, name) for name in _OUTPUT_OPTIONS if getattr(args, name, None)]
    created = [path for path in map(outermost_missing, outputs) if path is not None]
    code = 1
    try:
        code = _run(args, outputs)
    finally:
        if code != 0:
            remove_empty_folders(created)
    return code


def _run(args: argparse.Namespace, outputs: list[Path]) -> int:
    try:
        for path in outputs:
            check_folder_creatable(path.parent)
        if getattr(args, "device", None) is not None:  # checked, and auto resolved, up front
            from sparsekits.device import check_device

            args.device = check_device(args.device)
        return args.func(args)
    except InputError as error:
        print(f"sparsekits: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a write that failed (a full disk): atomic, so nothing half-written
        print(f"sparsekits: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sparsekits: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
