"""The ``sparsekits`` command: a thin layer over the importable API (one function per command)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparsekits.errors import InputError
from sparsekits.models.config import PRESETS
from sparsekits.phantoms.tissues import PHASES
from sparsekits.train.losses import LOSSES


def _phantom(args: argparse.Namespace) -> int:
    from sparsekits.phantoms import DEFAULT, write_phantom_dataset

    config = DEFAULT if args.phase is None else DEFAULT.with_phase(args.phase)
    write_phantom_dataset(
        args.out, n_cases=args.cases, labels_from=args.labels_from, seed=args.seed, config=config
    )
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from sparsekits.data.preprocess import preprocess_dataset

    stages = (args.stage,) if args.stage else (1, 2)
    report = preprocess_dataset(args.dataset, args.out, stages=stages, workers=args.workers)
    return 1 if report.failures else 0


def _train(args: argparse.Namespace) -> int:
    from sparsekits.train.trainer import TrainConfig, train

    train(
        TrainConfig(
            data=args.data,
            stage=args.stage,
            fold=args.fold,
            out=args.out,
            preset=args.preset,
            epochs=args.epochs,
            device=args.device,
            resume=args.resume,
            seed=args.seed,
            samples_per_epoch=args.samples_per_epoch,
            accumulation=args.accumulation,
            lr=args.lr,
            loss=args.loss,
            lesion_oversampling=args.lesion_oversampling,
            num_workers=args.workers,
            augment=not args.no_augment,
            val_every=args.val_every,
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
    )
    return 1 if summary.failures else 0


def _evaluate(args: argparse.Namespace) -> int:
    from sparsekits.evaluate.kits23 import evaluate_folders

    evaluate_folders(
        args.pred_dir, args.gt_dir, output_csv=args.output, roi_dir=args.roi, workers=args.workers
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sparsekits.demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from sparsekits.bench.pipeline import run_benchmark

    run_benchmark(
        args.input,
        stage=args.stage,
        preset=args.preset,
        device=args.device,
        json_path=args.json,
        out_dir=args.out,
        labels=args.labels,
        kidney_labels=args.kidney_labels,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsekits", description=__doc__)
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

    p = sub.add_parser("preprocess", help="write the sparse samples of a dataset into a cache")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage", type=int, choices=(1, 2), default=None, help="default: both")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("train", help="train one stage on one cross-validation fold")
    p.add_argument("--data", type=Path, required=True, help="preprocessed cache or dataset")
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint_last.pt")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--samples-per-epoch", type=int, default=None, help="default: the fold's training samples"
    )
    p.add_argument("--accumulation", type=int, default=8, help="samples per optimiser step")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument(
        "--loss", choices=LOSSES, default="dice", help="dice (the paper's) or dice+bce (nnU-Net's)"
    )
    p.add_argument(
        "--lesion-oversampling",
        type=float,
        default=0.0,
        help="fraction of draws forced onto samples holding a tumour or cyst (nnU-Net: 0.33)",
    )
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per rank")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--val-every", type=int, default=1, help="epochs between validations")
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimiser steps between saves")
    p.add_argument(
        "--stop-after-steps", type=int, default=None, help="stop (resumable) after N steps"
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="segment CT scans (NIfTI file, DICOM folder or a folder)")
    p.add_argument("-i", "--input", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--folds", default="all", help="'all' or a comma list such as 0,1")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument("--save-probabilities", action="store_true")
    p.add_argument("--overlay", action="store_true", help="write PNG overlays")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="KiTS23 Dice and Surface Dice of predictions")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("gt_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("evaluation.csv"))
    p.add_argument("--roi", type=Path, default=None, help="folder of stage-1 ROI masks")
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("demo", help="phantoms -> train both stages -> predict -> evaluate")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--quick", action="store_true", help="a shrunken run that checks every step")
    p.set_defaults(func=_demo)

    p = sub.add_parser("benchmark", help="sparse vs dense twin vs nnU-Net sliding window")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--stage", choices=("1", "2", "both"), default="both")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as error:
        print(f"sparsekits: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparsekits: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
