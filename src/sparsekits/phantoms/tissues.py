"""HU of every tissue of a phantom, per contrast phase, each with its source.

A ``Tissue`` is a typical mean HU, the spread of that mean from case to case (``case_sd``), and
the amplitude of the smooth texture inside one case (``texture``); image noise comes on top
(``NOISE_SD_HU``). Three phases (``PHASES``):

- ``non-contrast``: no iodine.
- ``arterial``: late arterial / corticomedullary (~25-40 s): bright cortex, darker medulla,
  hypervascular clear-cell RCC. Most KiTS cases are in this phase [KiTS21, KiTS23].
- ``nephrographic``: ~70-120 s (portal-venous): homogeneous nephrogram; KiTS23 added such cases.

Sources (keys used below; full references in docs/PHANTOMS.md). [R] = read in the source,
[D] = derived from read values, [E] = an estimate no source was found for.

- Kawamoto2011: unenhanced renal parenchyma 29 +- 3 HU.
- EJR2007: renal enhancement by bolus-tracking delay: cortex +195-217 HU, cortex - medulla
  110-140 HU in the corticomedullary phase; medulla +145 HU and cortex - medulla < 30 HU later.
- UrologiaJ: small clear-cell RCC 34 +- 7 (unenhanced), 173 +- 45 (corticomedullary),
  149 +- 34 (nephrographic).
- TSWJ2015: small renal tumours: papillary 50 (corticomedullary) and 60 HU (portal),
  chromophobe 135 and 161 HU.
- AJRpRCC: homogeneous papillary RCC ranges 15-51 (unenhanced), 32-100 (corticomedullary),
  18-91 HU (nephrographic).
- Pooler2012: RCC unenhanced 28 +- 10 HU (lowest ROI); 20-70 HU is the indeterminate range of a
  mass at unenhanced CT; a quarter of RCCs hold regions below 20 HU (necrosis, cystic change).
- Zhang2007: 79-88 % of clear-cell RCCs show a mixed pattern: enhancing solid parts and
  low-attenuation necrotic or cystic areas.
- Bosniak2019: simple cyst -9 to 20 HU; homogeneous >= 70 HU unenhanced is a hyperdense benign
  cyst (Bosniak II); septa and walls of complex cysts.
- Suh2003: high-attenuation cysts 55 HU vs RCC 101 HU at portal-venous CT.
- Boyce2010: liver 59 +- 11 HU unenhanced. Naruo2007: liver enhances by 56 +- 14 HU (portal).
- Park2006: liver minus spleen is 1-18 HU unenhanced. Lawlor2022: psoas 48 +- 6 HU unenhanced.
- LawlorFat: visceral fat -97 +- 9 HU; FatRI2023: abdominal fat -123 to -89 HU.
- SplitPsoas: contrast raises muscle HU by 18-26 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from sparsekits.regions import LABEL_NAMES

PHASES = ("non-contrast", "arterial", "nephrographic")

# Image noise (SD, HU) of 3-5 mm abdominal slices, drawn per case: about 10 HU at routine dose
# with iterative reconstruction, 12-20 with filtered back-projection [Zhao2016, RadiolMed2010].
NOISE_SD_HU = (8.0, 18.0)


@dataclass(frozen=True)
class Tissue:
    hu: float  # typical mean HU
    case_sd: float  # spread of the case's mean around ``hu``
    texture: float  # amplitude (HU) of the smooth texture within the tissue


class T(IntEnum):
    """Tissue classes of the body (painted on the coarse work grid)."""

    AIR = 0
    FAT = 1
    VISCERAL_FAT = 2
    MUSCLE = 3
    LIVER = 4
    SPLEEN = 5
    GALLBLADDER = 6
    STOMACH_FLUID = 7
    BOWEL_WALL = 8
    BOWEL_FLUID = 9
    STOOL = 10
    GAS = 11
    LUNG = 12
    CANCELLOUS = 13
    CORTICAL = 14
    DISC = 15
    CSF = 16
    AORTA = 17
    IVC = 18
    PERIRENAL_FAT = 19


# A phantom's tissue map (``layout.PHANTOM_TISSUES``) holds a body tissue's ``T`` code, or where
# the labels say kidney (1), tumour (2) or cyst (3), one of these codes.
LABELLED_TISSUES = {label: max(T) + label for label in (1, 2, 3)}
TISSUE_MAP_NAMES: dict[int, str] = {tissue.value: tissue.name.lower() for tissue in T} | {
    code: LABEL_NAMES[label] for label, code in LABELLED_TISSUES.items()
}


class R(IntEnum):
    """Tissues of the kidney and its lesions (painted at full resolution)."""

    CORTEX = 0
    MEDULLA = 1
    SINUS_FAT = 2
    URINE = 3  # renal pelvis and calyces
    CLEAR_CELL = 4  # clear-cell RCC, enhancing part
    NECROSIS = 5  # non-enhancing core of a clear-cell RCC
    PAPILLARY = 6  # papillary RCC: hypo-enhancing, homogeneous
    CHROMOPHOBE = 7
    SIMPLE_CYST = 8
    COMPLEX_CYST = 9  # hyperdense or proteinaceous content (Bosniak II-IIF)
    CYST_WALL = 10  # thick wall and septa of a complex cyst (Bosniak IIF-III)


# Tissues whose HU contrast does not change: outside the body, fat, gas, bone, fluids without
# iodine. Values [E] unless a key says otherwise.
_UNCHANGED: dict[T, Tissue] = {
    T.AIR: Tissue(-1000, 0, 0),
    T.FAT: Tissue(-105, 8, 6),  # FatRI2023 [R]
    T.VISCERAL_FAT: Tissue(-97, 8, 10),  # LawlorFat [R]
    T.PERIRENAL_FAT: Tissue(-95, 6, 8),  # fat row [D]
    T.GALLBLADDER: Tissue(10, 4, 2),
    T.STOMACH_FLUID: Tissue(15, 5, 4),
    T.BOWEL_FLUID: Tissue(20, 8, 10),
    T.STOOL: Tissue(-60, 20, 90),
    T.GAS: Tissue(-985, 5, 10),
    T.LUNG: Tissue(-850, 20, 40),
    T.CORTICAL: Tissue(850, 80, 60),
    T.DISC: Tissue(85, 8, 6),
    T.CSF: Tissue(12, 4, 2),
}

BODY_TISSUES: dict[str, dict[T, Tissue]] = {
    "non-contrast": {
        **_UNCHANGED,
        T.MUSCLE: Tissue(48, 5, 6),  # Lawlor2022 [R]
        T.LIVER: Tissue(59, 8, 5),  # Boyce2010 [R]
        T.SPLEEN: Tissue(50, 5, 5),  # Park2006: liver - spleen 1-18 HU [D]
        T.BOWEL_WALL: Tissue(38, 6, 8),  # [E]
        T.CANCELLOUS: Tissue(220, 30, 40),  # [E]
        T.AORTA: Tissue(42, 5, 3),  # unenhanced blood [E]
        T.IVC: Tissue(40, 5, 3),  # [E]
    },
    "arterial": {
        **_UNCHANGED,
        T.MUSCLE: Tissue(57, 5, 6),  # Lawlor2022 + SplitPsoas (+18-26 %) [D]
        T.LIVER: Tissue(72, 8, 6),  # portal supply not yet arrived [E]
        T.SPLEEN: Tissue(120, 15, 25),  # heterogeneous (arciform) arterial spleen [E]
        T.BOWEL_WALL: Tissue(70, 10, 10),  # [E]
        T.CANCELLOUS: Tissue(230, 30, 40),  # [E]
        T.AORTA: Tissue(300, 40, 6),  # routine arterial phase 250-350 [E]
        T.IVC: Tissue(80, 20, 15),  # unopacified infrarenal IVC, mixing above [E]
    },
    "nephrographic": {
        **_UNCHANGED,
        T.MUSCLE: Tissue(58, 5, 6),  # Lawlor2022 + SplitPsoas [D]
        T.LIVER: Tissue(112, 12, 6),  # Boyce2010 + Naruo2007 (59 + 56) [D]
        T.SPLEEN: Tissue(118, 12, 6),  # [E]
        T.BOWEL_WALL: Tissue(90, 12, 10),  # [E]
        T.CANCELLOUS: Tissue(240, 30, 40),  # [E]
        T.AORTA: Tissue(170, 20, 4),  # [E]
        T.IVC: Tissue(145, 20, 6),  # [E]
    },
}

RENAL_TISSUES: dict[str, dict[R, Tissue]] = {
    "non-contrast": {
        R.CORTEX: Tissue(30, 4, 4),  # Kawamoto2011 [R]
        R.MEDULLA: Tissue(30, 4, 4),  # no corticomedullary difference without contrast [E]
        R.SINUS_FAT: Tissue(-95, 8, 10),  # fat row [D]
        R.URINE: Tissue(8, 4, 2),  # [E]
        R.CLEAR_CELL: Tissue(34, 7, 8),  # UrologiaJ 34 +- 7 [R]
        R.NECROSIS: Tissue(18, 5, 5),  # Pooler2012: regions < 20 HU [D]
        R.PAPILLARY: Tissue(33, 9, 4),  # AJRpRCC range 15-51 [D]
        R.CHROMOPHOBE: Tissue(36, 7, 5),  # like other RCCs unenhanced (Pooler2012) [D]
        R.SIMPLE_CYST: Tissue(6, 6, 2),  # Bosniak2019: -9 to 20 [R]
        R.COMPLEX_CYST: Tissue(55, 15, 6),  # Pooler2012 20-70; Bosniak2019 >= 70 hyperdense [D]
        R.CYST_WALL: Tissue(35, 5, 3),  # like parenchyma [E]
    },
    "arterial": {
        R.CORTEX: Tissue(235, 20, 8),  # EJR2007: 30 + 195-217 [D]
        R.MEDULLA: Tissue(110, 15, 10),  # EJR2007: cortex - 110-140 [D]
        R.SINUS_FAT: Tissue(-95, 8, 10),
        R.URINE: Tissue(8, 4, 2),  # no contrast excreted yet [E]
        R.CLEAR_CELL: Tissue(173, 25, 40),  # UrologiaJ 173 +- 45 [R]
        R.NECROSIS: Tissue(22, 6, 6),  # does not enhance (Zhang2007) [D]
        R.PAPILLARY: Tissue(55, 15, 6),  # TSWJ2015 50; AJRpRCC 32-100 [R]
        R.CHROMOPHOBE: Tissue(135, 20, 12),  # TSWJ2015 135 [R]
        R.SIMPLE_CYST: Tissue(8, 6, 2),  # Bosniak2019 [R]
        R.COMPLEX_CYST: Tissue(55, 15, 6),  # does not enhance [D]
        R.CYST_WALL: Tissue(140, 25, 10),  # enhancing wall and septa (Bosniak IIF-III) [E]
    },
    "nephrographic": {
        R.CORTEX: Tissue(180, 20, 6),  # EJR2007: cortex - medulla < 30 [D]
        R.MEDULLA: Tissue(165, 20, 6),  # EJR2007: medulla 30 + 145 [D]
        R.SINUS_FAT: Tissue(-95, 8, 10),
        R.URINE: Tissue(12, 6, 3),  # excretion only begins [E]
        R.CLEAR_CELL: Tissue(145, 25, 30),  # UrologiaJ 149 +- 34; TSWJ2015 136 [R]
        R.NECROSIS: Tissue(24, 6, 6),  # [D]
        R.PAPILLARY: Tissue(60, 15, 6),  # TSWJ2015 60; AJRpRCC 18-91 [R]
        R.CHROMOPHOBE: Tissue(158, 20, 12),  # TSWJ2015 161 [R]
        R.SIMPLE_CYST: Tissue(10, 6, 2),  # Bosniak2019 [R]
        R.COMPLEX_CYST: Tissue(55, 15, 6),  # Suh2003 55 [R]
        R.CYST_WALL: Tissue(150, 25, 10),  # [E]
    },
}

# Subtypes of the tumours (label 2) and cysts (label 3), with their shares. RCC: 75 % clear
# cell, 7-15 % papillary, 5 % chromophobe (van Oostenbrugge 2018), normalised here; cysts:
# mostly simple (Bosniak I-II), a fifth complex [E].
TUMOUR_SUBTYPES = {R.CLEAR_CELL: 0.80, R.PAPILLARY: 0.14, R.CHROMOPHOBE: 0.06}
CYST_SUBTYPES = {R.SIMPLE_CYST: 0.80, R.COMPLEX_CYST: 0.20}


def check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r} (known: {', '.join(PHASES)})")
    return phase
