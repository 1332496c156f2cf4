"""The fixed label vocabulary shared by data, models, converters and evaluators.

COCO category ids start at 1 (1 EDH .. 5 IVH); YOLO classes and the classifier's subtype outputs are
the same order, contiguous from 0. The classifier's vector is ``LABELS`` = ("any",) + SUBTYPES.

Label masks hold 0 (background), 1..5 (a subtype) and ``UNKNOWN_SUBTYPE`` = 6: a bleed pixel whose
subtype is not known. In training data it is a binary mask on a slice with several subtypes, exact
"any bleed" supervision; in predictions it is the bleed of a binary segmentation head (background +
any bleed), which tells no subtype. It is never a COCO category or YOLO class. Outputs name it with
``LABEL_NAMES`` / ``LABEL_LONG_NAMES``, the one place mask values get their names.
"""

SUBTYPES = ("EDH", "SDH", "SAH", "IPH", "IVH")
LABELS = ("any",) + SUBTYPES
ANY = LABELS.index("any")  # the "any bleed" column of LABELS-ordered arrays
SUBTYPE_NAMES = {
    "EDH": "epidural",
    "SDH": "subdural",
    "SAH": "subarachnoid",
    "IPH": "intraparenchymal",
    "IVH": "intraventricular",
}
CATEGORY_IDS = {name: i + 1 for i, name in enumerate(SUBTYPES)}  # EDH=1 .. IVH=5
CATEGORY_NAMES = {i: name for name, i in CATEGORY_IDS.items()}
UNKNOWN_SUBTYPE = len(SUBTYPES) + 1  # mask value: bleed, subtype unknown
MASK_LABELS = (*CATEGORY_NAMES, UNKNOWN_SUBTYPE)  # every bleed value a label mask can hold, 1..6
# mask value -> name in outputs (lesions.csv, overlay legend, DICOM-SEG, probability channels)
LABEL_NAMES = {**CATEGORY_NAMES, UNKNOWN_SUBTYPE: "ICH"}
# mask value -> display colour (overlays, panels): the five subtypes, then cyan for ICH of unknown subtype
LABEL_COLORS = {1: "#e6194b", 2: "#3cb44b", 3: "#ffe119", 4: "#4363d8", 5: "#f58231", UNKNOWN_SUBTYPE: "#42d4f4"}
LABEL_LONG_NAMES = {**{i: f"{SUBTYPE_NAMES[name]} hemorrhage" for i, name in CATEGORY_NAMES.items()},
                    UNKNOWN_SUBTYPE: "intracranial hemorrhage, subtype unknown"}


def subtype_id(name: str) -> int:
    """COCO category id (1..5) of a subtype name; accepts the short and the long spelling."""
    key = name.strip()
    upper = key.upper()
    if upper in CATEGORY_IDS:
        return CATEGORY_IDS[upper]
    for short, long in SUBTYPE_NAMES.items():
        if key.lower() == long:
            return CATEGORY_IDS[short]
    raise ValueError(f"unknown subtype {name!r}: expected one of {', '.join(SUBTYPES)}")


def coco_categories() -> list[dict]:
    """The COCO ``categories`` list, identical in every export."""
    return [
        {"id": CATEGORY_IDS[s], "name": s, "supercategory": "hemorrhage", "long_name": SUBTYPE_NAMES[s]}
        for s in SUBTYPES
    ]
