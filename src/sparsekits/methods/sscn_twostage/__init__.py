"""``sscn-twostage``: the paper's method (arXiv 2511.04334, ../shared/docs/METHOD.md).

Stage ``roi`` finds each kidney's region of interest on a sparse coarse view of the whole scan
(voxels inside a Hounsfield window); stage ``fine`` segments kidney, tumour and cyst at 0.78 mm
inside each ROI. Both are submanifold sparse ConvNeXt V2 U-Nets with three sigmoid regions
(kidney_and_mass, mass, tumor). The package owns the method:

- this module: the method object (``METHOD``), its plans (presets) and the plans implied by
  caches and model folders written before plans existed;
- ``chain``: the walk "roi view -> ROI components -> each ROI's fine view", written once and
  used by preprocessing, prediction, the benchmarks and the demo;
- ``predictor``: two-stage prediction of a scan on its own grid.

The training step (sparse sigmoid regions) is ``sparsekits.train.sparse_regions``, which other
sparse methods may share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from sparsekits.methods.base import Method
from sparsekits.models.config import resolve_config
from sparsekits.plan import HuWindow, Plan, Recipe, RoiRule, StagePlan, ZScore

ROLES = ("roi", "fine")


class SscnTwoStage(Method):
    name = "sscn-twostage"
    roles = ROLES
    losses = ("dice", "dice+bce")
    architectures = ("sparse-convnext-unet",)

    @cached_property
    def presets(self) -> dict[str, Plan]:
        return {
            "paper": SSCN_TWOSTAGE,
            # The paper's network with a bias in the stem conv, which keeps the HU (README).
            "paper-stem-bias": SSCN_TWOSTAGE.with_network("paper-stem-bias"),
            # The small network for CPU runs and tests.
            "small": SSCN_TWOSTAGE.with_network("small"),
            # `sparsekits demo` (sized for minutes on 2 CPU cores) and its quick test run.
            "demo": DEMO,
            "demo-quick": DEMO_QUICK,
        }

    def case_samples(self, case, image, labels, plan, roles):
        from sparsekits.methods.sscn_twostage.chain import case_samples

        return case_samples(case, image, labels, plan, roles)

    def training_task(self, plan: Plan, role: str):
        from sparsekits.train.sparse_regions import SparseRegionTask

        return SparseRegionTask(plan.stage(role))

    def predictor(
        self, model_dir: Path, plan: Plan, device: str, folds: str | Sequence[int], tta: bool
    ):
        from sparsekits.methods.sscn_twostage.predictor import TwoStagePredictor

        return TwoStagePredictor(model_dir, plan, device=device, folds=folds, tta=tta)


# Defined before the plans below: building a Plan validates it through the registry, which
# finds this object in the half-imported module.
METHOD = SscnTwoStage()

# METHOD.md's two stages.
SSCN_TWOSTAGE = Plan(
    method=METHOD.name,
    stages=(
        StagePlan(
            role="roi",
            spacing_mm=1.99,
            sparsify=HuWindow(-53.4, 283.2),
            normalise=ZScore(48.10007, 62.645897),
            body_crop=True,
        ),
        StagePlan(
            role="fine",
            spacing_mm=0.78,
            sparsify=HuWindow(-300.0, 500.0),
            normalise=ZScore(57.802067, 81.260414),
            crop_margin_vox=(35, 35, 10),
        ),
    ),
    roi=RoiRule(),
)

# Twice METHOD.md's roi-stage spacing, for training that stage on a CPU in minutes (the demo,
# the learning benchmark): eight times fewer sparse voxels. It only has to find the kidneys.
# Measured on the demo's phantoms: 144 steps at 3.98 mm reached validation kidney Dice 0.82 in
# 55 s, where 144 steps at 1.99 mm reached 0.68 in 6 minutes. The 10 mm ROI dilation is 2.5
# voxels there.
COARSE_ROI_SPACING_MM = 3.98


# Components removed from the demo's answers (kidney, tumour, cyst; mL): a briefly trained fine
# stage scatters one-voxel cysts (142 false cysts on the 6 held-out phantoms, median 0.01 mL,
# 3 over 0.1 mL); the dense cascade's demo uses the same volumes.
DEMO_MIN_COMPONENT_ML = (2.0, 0.1, 0.1)


def demo_plan(roi: Recipe, fine: Recipe) -> Plan:
    """METHOD.md's plan with the small network, the roi stage on the coarser grid, the given
    recipes, and ROIs cut from the kidney_and_mass probability: the roi stage trains for a
    minute with the paper's Dice, which leaves its mass and tumour outputs high all over the
    scan (no gradient against them), and the paper's max over the regions then makes one ROI of
    the whole scan."""
    plan = SSCN_TWOSTAGE.with_network("small")
    rule = dataclasses.replace(plan.roi, region="kidney_and_mass")
    plan = dataclasses.replace(plan, roi=rule, min_component_ml=DEMO_MIN_COMPONENT_ML)
    plan = plan.with_stage("roi", spacing_mm=COARSE_ROI_SPACING_MM, recipe=roi)
    return plan.with_stage("fine", recipe=fine)


# Sized from measured costs (2 cores, 2026-12-02): a roi step ~0.35-0.45 s (whole samples, the
# paper's Dice: patches or Dice + BCE left it finding no kidney in 160-240 steps); a fine step
# ~0.45 s on lesion-centred 48^3 patches (~2 s for a whole ROI) with Dice + BCE (the paper's
# Dice alone paints every kidney as tumour). The fine stage's validation on whole ROIs reached
# kidney_and_mass 0.85 and masses 0.31 after 240 steps, 0.82 and 0.64 after 400. Augmentation is
# off: in a few hundred steps it slows convergence more than it helps, and every phantom is a
# new random anatomy. On 48 training phantoms (2026-12-03) the roi stage's validation
# kidney_and_mass Dice reached 0.52 / 0.755 / 0.758 / 0.769 after 48 / 96 / 144 / 192 steps, yet
# its held-out ROI recall of the masses still rose from 144 to 192 steps (0.60 -> 0.81 on 24
# phantoms; Dice 0.756 / 0.425 -> 0.788 / 0.462). The fine stage's validation masses Dice was
# 0.79 / 0.81 / 0.86 after 160 / 240 / 320 steps (on ground-truth ROIs: 0.954 / 0.733 / 0.679
# kidney_and_mass / masses / tumour through the pipeline with them, so the ROIs are the limit).
# The roi stage's learning rate: at 1e-2 it died at step ~40 with seed 1 (every output 0, kidney
# Dice 0 to the end, a demo Dice of 0; gradient clipping at 12 changed nothing, AdamW steps by
# the rate whatever the gradient's norm); at 5e-3 the same seed trained (validation 0.66), but on
# the phantoms with whole kidneys in view (2026-12-03) seed 0 collapsed at step 40 (training
# Dice 0.49 -> 0.07) and recovered to only 0.51 by step 192; at 2e-3 it rose smoothly to 0.795.
DEMO = demo_plan(
    Recipe(lr=2e-3, epochs=24, samples_per_epoch=8, accumulation=1, augment=False),
    Recipe(
        loss="dice+bce",
        patch_vox=48,
        lesion_oversampling=0.5,
        lr=1e-2,
        epochs=8,
        samples_per_epoch=40,
        accumulation=1,
        augment=False,
    ),
)
# For the end-to-end test: every step runs, nothing is trained long enough to be good.
_ONE_STEP = Recipe(epochs=1, samples_per_epoch=1, accumulation=1, lr=3e-3, augment=False)
DEMO_QUICK = demo_plan(_ONE_STEP, _ONE_STEP)


def legacy_plan(stage_configs: dict[int, dict], networks: dict | None = None) -> Plan:
    """The plan implied by caches and model folders written before plans existed (when this
    was the only method), which recorded each stage's config (spacing, HU window,
    normalisation, margin) by number and nothing else: METHOD.md's plan with those settings
    (the roi stage was cropped to the body then too)."""
    plan = SSCN_TWOSTAGE
    for number, values in stage_configs.items():
        changes = {
            "spacing_mm": float(values["spacing_mm"]),
            "sparsify": HuWindow(*values["hu_window"]),
            "normalise": ZScore(values["norm_mean"], values["norm_std"]),
            "crop_margin_vox": tuple(values["crop_margin_vox"]),
        }
        if networks and number in networks:
            changes["network"] = resolve_config(networks[number])
        plan = plan.with_stage(int(number), **changes)
    return plan
