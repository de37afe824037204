"""Hounsfield units of abdominal tissues per contrast phase, for the CT-like phantoms.

Each entry is ``(mean, sd)`` across patients for the non-contrast, arterial
(late arterial, about 35 s after injection) and portal-venous (about 70 s)
phase. A phantom draws one value per structure and case from ``N(mean, sd)``.

Sources, per number:

* Organ enhancement per phase: K. T. Bae, "Intravenous contrast medium
  administration and scan timing at CT", *Radiology* 256 (2010) 32–61 (liver
  about +50 HU in the portal-venous phase, aorta 250–350 HU in the late
  arterial phase, spleen enhancing before the liver).
* Kidney cortex and medulla per phase: B. I. Yuh, R. H. Cohan, "Different phases of
  renal enhancement", *AJR* 173 (1999) 747–755 (corticomedullary phase cortex
  ≈ 150–200 HU over a medulla ≈ 60–100 HU; nephrographic phase both ≈ 120–180;
  unenhanced 30–40 HU).
* Unenhanced liver 55–65 HU and spleen about 8–10 HU below it: Y. Kodama et al.,
  "Comparison of CT methods for determining the fat content of the liver",
  *AJR* 188 (2007) 1307–1312.
* Fat −120…−80, muscle 40–60, cancellous bone 150–300, water/bile/urine 0–20,
  cortical bone > 600 HU: textbook ranges (W. A. Kalender, *Computed
  Tomography*, 3rd ed., 2011).
* Oral positive contrast 150–500 HU in bowel: the usual range of diluted
  water-soluble iodinated oral contrast (our assumption, not a measured value).
* The real CT in ``flare_helpers/data/real_ct`` (case 9001, an unenhanced-looking scan)
  measured inside each organ (mask eroded by one voxel): liver 46 ± 13 HU,
  spleen 35 ± 12, right kidney 14 ± 27, left kidney 20 ± 16, subcutaneous fat
  −96 (median), soft-tissue mode 23. The non-contrast rows below are widened
  downward to hold it: its kidneys are darker than published unenhanced
  values (TotalSegmentator's kidney label includes the renal sinus), its liver
  and spleen 5–10 HU darker (3 mm voxels average in fat at the edges).
"""

from __future__ import annotations

PHASES: tuple[str, ...] = ("non-contrast", "arterial", "portal-venous")
#: How often each phase is drawn: portal-venous is the routine abdominal CT.
PHASE_WEIGHTS: tuple[float, ...] = (0.3, 0.2, 0.5)

#: tissue → ((mean, sd) non-contrast, arterial, portal-venous)
HU: dict[str, tuple[tuple[float, float], ...]] = {
    "liver": ((52, 8), (75, 10), (110, 15)),
    "spleen": ((44, 7), (120, 20), (115, 15)),
    "kidney_cortex": ((30, 8), (175, 25), (160, 25)),
    "kidney_medulla": ((26, 8), (80, 15), (150, 25)),
    "renal_pelvis": ((10, 6), (10, 6), (12, 6)),
    "pancreas": ((42, 6), (110, 20), (90, 15)),
    "adrenal": ((25, 8), (60, 12), (55, 10)),
    "aorta": ((42, 6), (300, 50), (160, 25)),
    "ivc": ((40, 6), (90, 25), (140, 20)),
    "portal_vein": ((40, 6), (80, 20), (170, 25)),
    "hepatic_vein": ((40, 6), (45, 8), (150, 25)),
    "bowel_wall": ((38, 6), (80, 15), (90, 15)),
    "muscle": ((50, 6), (55, 6), (60, 6)),
    "fat": ((-100, 10), (-100, 10), (-100, 10)),
    "water": ((10, 5), (10, 5), (10, 5)),
    "bile": ((8, 5), (8, 5), (8, 5)),
    "oral_contrast": ((280, 80), (280, 80), (280, 80)),
    "gas": ((-950, 30), (-950, 30), (-950, 30)),
    "faeces": ((-40, 30), (-40, 30), (-40, 30)),
    "cancellous_bone": ((220, 50), (230, 50), (230, 50)),
    "cortical_bone": ((750, 120), (750, 120), (750, 120)),
    "disc": ((85, 10), (85, 10), (85, 10)),
    "csf": ((12, 5), (12, 5), (12, 5)),
    "cyst": ((8, 5), (8, 5), (8, 5)),
}

#: A tumour is this much (HU) darker than its organ in the drawn phase.
TUMOUR_DROP: tuple[float, float] = (20.0, 50.0)


def draw_hu(rng, phase: int, jitter: float = 0.0) -> dict[str, float]:
    """One case's HU per tissue: calibrated ``N(mean, sd)`` plus ``N(0, jitter)``.

    ``jitter`` > 0 adds SynthSeg-like randomisation: every tissue shifts on its
    own, so a network cannot rely on the exact contrast between organs.
    """
    out = {}
    for name, rows in HU.items():
        mean, sd = rows[phase]
        extra = jitter if name not in ("gas", "fat", "cortical_bone") else 0.0
        out[name] = float(mean + rng.normal(0.0, sd) + (rng.normal(0.0, extra) if extra else 0.0))
    return out
