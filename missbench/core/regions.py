"""BraTS label conventions: labels {0, 1, 2, 4} and the nested regions ET ⊂ TC ⊂ WT scored per case.

Regions are kept in table order ET, TC, WT everywhere (ShaSpec's code orders its sigmoid channels
ET, WT, TC; a permutation of channels changes nothing).
"""

LABELS = (0, 1, 2, 4)
REGIONS = ("ET", "TC", "WT")
REGION_LABELS = {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}
