"""The ``sparsekits`` command: a thin layer over the importable API (one function per command).

Exit codes: 0 done; 1 failed (an input of a batch, a write: a full disk); 2 refused (bad input or
options, in one line naming the file and the problem); 130 interrupted. A command that fails
removes the folders it created and left empty. Options are never abbreviated: ``--fold`` is not
``--folds``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sparsekits import __version__
from sparsekits.device import DEVICE_CHOICES
from sparsekits.errors import InputError, one_line
from sparsekits.fileio import check_folder_creatable, outermost_missing, remove_empty_folders
from sparsekits.layout import OUTPUT_SUFFIXES
from sparsekits.methods import DEFAULT_METHOD, method_names
from sparsekits.models.package import HOME_VARIABLE

# Imports that take seconds (torch, SimpleITK, nibabel, scipy, matplotlib) wait until a command
# runs, inside its function: ``--help`` and ``--version`` stay instant.


def _phantom(args: argparse.Namespace) -> int:
    from sparsekits.phantoms import DEFAULT, write_phantom_dataset

    config = DEFAULT if args.phase is None else DEFAULT.with_phase(args.phase)
    write_phantom_dataset(
        args.output, n_cases=args.cases, labels_from=args.labels_from, seed=args.seed, config=config
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
    report = preprocess_dataset(args.input, args.output, plan, roles, workers=args.workers)
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
        base = base_plan(args.input, plan)
        recipe = dataclasses.replace(base.stage(args.stage).recipe, **changes)
        try:  # refuse a bad option before anything is written
            base.with_stage(args.stage, recipe=recipe)
        except ValueError as error:
            raise InputError("train", f"invalid recipe option: {error}") from error
    train(
        TrainConfig(
            data=args.input,
            stage=args.stage,
            fold=args.fold,
            out=args.output,
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
    from sparsekits.predict.pipeline import Part, predict

    part = Part(args.num_parts, args.part_id)  # refused in one line before any work
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
        part=part,
        overwrite=args.overwrite,
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


def _model_export(args: argparse.Namespace) -> int:
    from sparsekits.models.package import export_model

    manifest = export_model(args.model, args.output)
    files = len(manifest["files"])
    print(f"sparsekits model export: {args.model} ({manifest['method']}, {files} files) -> "
          f"{args.output}", file=sys.stderr)  # fmt: skip
    return 0


def _model_install(args: argparse.Namespace) -> int:
    from sparsekits.models.package import install_model

    folder = install_model(args.package, name=args.name, force=args.force)
    print(f"sparsekits model install: {args.package} -> {folder} (--model {folder.name})",
          file=sys.stderr)  # fmt: skip
    return 0


def _model_list(args: argparse.Namespace) -> int:
    from sparsekits.models.package import installed_models, listing, models_root

    models = installed_models()
    if not models:
        print(f"no models installed in {models_root()}")
        return 0
    print("\n".join(listing(models)))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sparsekits.evaluate.kits23 import evaluate_folders

    evaluate_folders(
        args.pred_dir, args.gt_dir, output_csv=args.output, roi_dir=args.roi, workers=args.workers
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sparsekits.demo import run_demo

    run_demo(args.output, quick=args.quick, method=args.method)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from sparsekits.compare import parse_models, run_compare

    run_compare(
        args.output,
        tuple(args.methods),
        budget_min=args.budget_min,
        models=parse_models(args.model),
        quick=args.quick,
        seed=args.seed,
        device=args.device,
    )
    print(f"compare: report -> {args.output / 'compare.md'}")
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
        out_dir=args.output,
        labels=args.labels,
        kidney_labels=args.kidney_labels,
    )
    return 0


# The options that name what a command writes.
_OUTPUT_OPTIONS = ("output", "json")
_DEVICE_HELP = f"{DEVICE_CHOICES}; refused when this machine has no such device"
_MODEL_HELP = "model folder, or the name of an installed model (sparsekits model list)"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help line ends with its default, or says it is required. A default of None
    means something each option's help says in words (``default: the plan's``); a flag's is
    ``off``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or text == argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0 and action.default is False:  # store_true
            return f"{text} (default: off)"
        if action.default is None:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A parser (and, through add_subparsers, every subparser) that takes no abbreviations
    (``--fold 0`` must not silently mean ``--folds 0``) and shows each option's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, allow_abbrev=False, **kwargs)


class _LazyChoices(Sequence):
    """Choices read on first use (a value checked, a command's help shown), so that building
    the parser does not import the module that holds them."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load

    def __getitem__(self, index):
        return self._load()[index]

    def __len__(self) -> int:
        return len(self._load())


def _network_presets() -> Sequence[str]:
    from sparsekits.models.config import PRESETS  # imports numpy

    return sorted(PRESETS)


# --preset of train and benchmark: a network preset, listed in the help line.
_NETWORK_PRESET = {
    "choices": _LazyChoices(_network_presets),
    "metavar": "PRESET",
    "default": None,
    "help": "network: %(choices)s (default: the plan's)",
}


def _phases() -> Sequence[str]:
    from sparsekits.phantoms.tissues import PHASES  # the phantoms package imports nibabel, scipy

    return PHASES


def _plain(text: str) -> str:
    """A docstring as --help prints it: without reST's inline-literal marks."""
    return text.replace("``", "")


def _add_output(
    parser: argparse.ArgumentParser, text: str, default: Path | None = None, alias: str = "--out"
) -> None:
    """``-o/--output`` (required when it has no default), and the old spelling ``alias`` kept,
    hidden, for existing scripts."""
    group = parser.add_mutually_exclusive_group(required=default is None)
    text += " (required)" if default is None else ""  # the group, not the option, is required
    group.add_argument("-o", "--output", type=Path, default=default, help=text)
    group.add_argument(
        alias, dest="output", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


def _add_input(
    parser: argparse.ArgumentParser, text: str, alias: str | None = None, positional: bool = False
) -> None:
    """``-i/--input`` (required), and the old spelling kept, hidden: an option ``alias`` or, with
    ``positional``, the input as the first argument (``_take_positional_input``)."""
    text += " (required)"
    if positional:  # argparse cannot group a positional with -i: checked after parsing
        parser.add_argument("-i", "--input", type=Path, help=text)
        parser.add_argument(_POSITIONAL_INPUT, nargs="?", type=Path, help=argparse.SUPPRESS)
        parser.set_defaults(input_parser=parser)
        return
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("-i", "--input", type=Path, help=text)
    if alias is not None:
        group.add_argument(
            alias, dest="input", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )


# The dest of the old spelling of -i as a positional argument (preprocess DATASET).
_POSITIONAL_INPUT = "input_argument"


def _take_positional_input(args: argparse.Namespace) -> None:
    """``args.input`` from ``-i`` or the hidden positional argument: exactly one of them (both
    helper attributes removed, so that the arguments read the same either way)."""
    parser = vars(args).pop("input_parser", None)
    if parser is None:
        return
    positional = vars(args).pop(_POSITIONAL_INPUT)
    if args.input is not None and positional is not None:
        parser.error("give the input once: -i/--input or as the first argument")
    if args.input is None and positional is None:
        parser.error("the following arguments are required: -i/--input")
    args.input = args.input or positional


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparsekits", description=_plain(__doc__))
    parser.add_argument("--version", action="version", version=f"sparsekits {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("phantom", help="write a synthetic CT dataset in the KiTS23 layout")
    _add_output(p, "dataset folder to write (KiTS23 layout: case_XXXXX/)")
    p.add_argument("--cases", type=int, default=8, help="number of cases")
    p.add_argument(
        "--labels-from",
        type=Path,
        default=None,
        help="folder of real KiTS23 label maps to take kidney geometry from (default: synthetic "
        "kidneys)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of case 0 (each case its own)")
    p.add_argument(
        "--phase",
        choices=_LazyChoices(_phases),
        metavar="PHASE",  # else argparse lists the choices while the parser is built
        default=None,
        help="contrast phase of every case: %(choices)s (default: 70%% arterial, 30%% "
        "nephrographic)",
    )
    p.set_defaults(func=_phantom)

    p = sub.add_parser("plan", help="write a method's default plan (to edit, then --plan FILE)")
    _add_output(p, "plan JSON file to write")
    p.add_argument("--method", choices=method_names(), default=DEFAULT_METHOD, help="the method")
    p.add_argument("--preset", default=None, help="one of the method's plans (default: its first)")
    p.set_defaults(func=_plan)

    p = sub.add_parser("preprocess", help="write the sparse samples of a dataset into a cache")
    _add_input(p, "dataset folder (KiTS23 or nnU-Net raw layout, or image files)", positional=True)
    _add_output(p, "cache folder to write")
    p.add_argument("--stage", default=None, help="a stage of the plan's method (default: all)")
    p.add_argument("--workers", type=int, default=1, help="cases preprocessed in parallel")
    _add_plan_option(p)
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("train", help="train one stage on one cross-validation fold")
    _add_input(p, "preprocessed cache or dataset", alias="--data")
    p.add_argument(
        "--stage", required=True, help="a stage of the plan's method by role (roi, fine) or number"
    )
    p.add_argument("--fold", type=int, default=0, help="cross-validation fold to train")
    _add_output(p, "training run folder RUN to write")
    _add_plan_option(p, "default: the cache's plan")
    p.add_argument("--preset", **_NETWORK_PRESET)
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint_last.pt")
    p.add_argument("--seed", type=int, default=42, help="weights, draws and augmentation")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per rank")
    p.add_argument("--val-every", type=int, default=1, help="epochs between validations")
    p.add_argument(
        "--val-samples",
        type=int,
        help="validate on at most this many samples, spread over the fold's (default: all)",
    )
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimiser steps between saves")
    p.add_argument(
        "--stop-after-steps",
        type=int,
        default=None,
        help="stop (resumable) after N steps (default: never)",
    )
    recipe = p.add_argument_group("recipe (default: the plan's recipe for the stage)")
    recipe.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    recipe.add_argument(
        "--samples-per-epoch", type=int, default=None, help="plan's default: one pass over the fold"
    )
    recipe.add_argument(
        "--accumulation", type=int, default=None, help="samples per step (default: the recipe's)"
    )
    recipe.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    recipe.add_argument(
        "--loss",
        default=None,
        help="one of the method's losses (sscn-twostage: dice, dice+bce; default: the recipe's)",
    )
    recipe.add_argument(
        "--lesion-oversampling",
        type=float,
        default=None,
        help="share of draws forced onto samples holding a tumour or cyst (nnU-Net: 0.33; "
        "default: the recipe's)",
    )
    recipe.add_argument(
        "--patch-vox",
        type=int,
        default=None,
        help="train on cubes of N voxels (stage grid; default: the recipe's)",
    )
    recipe.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="augmentation (default: the recipe's)",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "predict", help="segment CT scans (NIfTI, NRRD, MetaImage file, DICOM folder or a folder)"
    )
    _add_input(p, "a scan file, a DICOM series folder, or a folder of them (batch)")
    _add_output(
        p, "output folder, or for one scan a file name such as seg.nii.gz (NAME.json beside it)"
    )
    p.add_argument("--model", type=Path, required=True, help=_MODEL_HELP)
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    p.add_argument("--folds", default="all", help="'all' or a comma list such as 0,1")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write NAME_roi.nii.gz and NAME_probabilities.npz",
    )
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
    _add_plan_option(
        p, "checked against the model's own plan, which prediction uses (default: none)"
    )
    batch = p.add_argument_group("batch (a folder of inputs) over several processes or machines")
    batch.add_argument(
        "--num-parts",
        type=int,
        default=1,
        metavar="N",
        help="split the folder's sorted cases into N disjoint parts, one per worker",
    )
    batch.add_argument(
        "--part-id",
        type=int,
        default=0,
        metavar="K",
        help="this worker's part, 0 <= K < N: every N-th case from the K-th",
    )
    batch.add_argument(
        "--overwrite",
        action="store_true",
        help="redo cases whose outputs are complete (label maps and report), which are "
        "skipped otherwise so that a killed batch resumes",
    )
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "model", help="model folders: assemble one from training runs, export, install, list"
    )
    model = p.add_subparsers(dest="model_command", required=True)
    q = model.add_parser("assemble", help="MODEL folder from training runs (both stages, folds)")
    q.add_argument("runs", type=Path, nargs="+", help="training run folders (RUN/model inside)")
    _add_output(q, "model folder to write")
    q.set_defaults(func=_model_assemble)
    q = model.add_parser("export", help="a model folder as one zip file, to install elsewhere")
    q.add_argument("model", type=Path, help="model folder")
    _add_output(q, "package (zip file) to write, such as kits.zip")
    q.set_defaults(func=_model_export)
    q = model.add_parser(
        "install", help=f"check a package and unpack it into ${HOME_VARIABLE}/models/NAME"
    )
    q.add_argument("package", type=Path, help="package (zip file) that model export wrote")
    q.add_argument("--name", default=None, help="name to install as (default: the file's stem)")
    q.add_argument("--force", action="store_true", help="replace a model of that name")
    q.set_defaults(func=_model_install)
    q = model.add_parser("list", help="installed models: name, method, sparsekits version, size")
    q.set_defaults(func=_model_list)

    p = sub.add_parser("evaluate", help="KiTS23 Dice and Surface Dice of predictions")
    p.add_argument("pred_dir", type=Path, help="folder of predicted label maps")
    p.add_argument("gt_dir", type=Path, help="ground truth: a dataset or a folder of label maps")
    _add_output(p, "CSV file to write", default=Path("evaluation.csv"))
    p.add_argument(
        "--roi", type=Path, default=None, help="folder of stage-1 ROI masks (default: none)"
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("demo", help="phantoms -> train every stage -> predict -> evaluate")
    _add_output(p, "folder to write (report.md and every step's files)", Path("demo_out"))
    p.add_argument("--method", choices=method_names(), default=DEFAULT_METHOD, help="the method")
    p.add_argument("--quick", action="store_true", help="a shrunken run that checks every step")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "compare", help="methods side by side: train, predict and score on the same phantoms"
    )
    _add_output(p, "folder to write (compare.md and each method's files)", Path("compare_out"))
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
        help="training minutes of all methods together on a quiet 2-core machine: scales each "
        "method's demo preset",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="METHOD=MODEL",
        help="a trained model for METHOD (not trained here): a folder or an installed model's "
        "name; repeatable (default: train every method)",
    )
    p.add_argument("--seed", type=int, default=0, help="phantoms and training draws")
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    p.add_argument("--quick", action="store_true", help="a shrunken run that checks every step")
    p.set_defaults(func=_compare)

    p = sub.add_parser("benchmark", help="sparse vs dense twin vs nnU-Net sliding window")
    _add_input(p, "CT scan to measure on")
    p.add_argument(
        "--stage", choices=("1", "2", "both"), default="both", help="the stages to measure"
    )
    p.add_argument("--preset", **_NETWORK_PRESET)
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    _add_plan_option(p)
    p.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON (default: none)"
    )
    _add_output(p, "folder to write (benchmark.md, figures)", Path("benchmark_out"))
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="label map on the CT's grid that places the kidney ROI (needed for stage 2; "
        "default: none)",
    )
    p.add_argument(
        "--kidney-labels",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default="1,2,3",  # argparse passes a string default through type
        help="label values of the kidneys in --labels (KiTS23: 1,2,3; TotalSegmentator v1: 2,3)",
    )
    p.set_defaults(func=_benchmark)
    return parser


def _add_plan_option(parser: argparse.ArgumentParser, default: str = "") -> None:
    note = default or f"default: the {DEFAULT_METHOD} plan (sparsekits plan -o FILE writes it)"
    parser.add_argument("--plan", type=Path, default=None, help=f"a plan JSON file; {note}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _take_positional_input(args)
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
