"""The built-in category lists: counts, format, known entries, and the experiments they serve.

The lists were compared, when they were added, with independent public copies (detectron2's
builtin_meta, CSAILVision's objectInfo150.csv and color150.mat, nightrome/cocostuff's
labels.txt, mmsegmentation's Mapillary Vistas v1.2 list, Mask2Former's registrations); the spot
checks below pin entries of those copies.
"""

import fnmatch
import json
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from maskformer.data import shapes
from maskformer.data.categories import builtin_categories, builtin_for_dataset, builtin_names
from maskformer.data.coco_panoptic import categories_from_annotations
from maskformer.errors import ConfigError
from maskformer.experiments import get_experiment, list_experiments

# name: (number of classes, number of things)
EXPECTED = {
    "coco_panoptic": (133, 80),
    "ade20k_150": (150, 100),
    "coco_stuff_171": (171, 80),
    "cityscapes_19": (19, 8),
    "mapillary_vistas_65": (65, 37),
    "ade20k_full_847": (847, 0),
    "voc_21": (21, 20),
    "shapes": (5, 3),
    "coco_instance_80": (80, 80),
    "ade20k_instance_100": (100, 100),
    "cityscapes_instance_8": (8, 8),
}
# Lists that are not files: the shapes generator's and the instance lists (thing classes).
DERIVED = {"shapes", "coco_instance_80", "ade20k_instance_100", "cityscapes_instance_8"}
KEYS = {"id", "original_id", "name", "isthing", "color"}
BUILTIN_DIR = resources.files("maskformer.data") / "builtin"


def _by_original_id(name):
    return {c["original_id"]: c for c in builtin_categories(name)}


def test_the_names_are_the_lists_and_every_file_is_one():
    assert sorted(builtin_names()) == sorted(EXPECTED)
    files = sorted(p.name for p in BUILTIN_DIR.iterdir() if p.name.endswith(".json"))
    assert files == sorted(f"{n}.json" for n in EXPECTED if n not in DERIVED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_and_format(name):
    cats = builtin_categories(name)
    count, things = EXPECTED[name]
    assert len(cats) == count
    assert sum(c["isthing"] for c in cats) == things
    assert [c["id"] for c in cats] == list(range(count))
    for c in cats:
        assert set(c) == KEYS, c
        assert c["isthing"] in (0, 1)
        assert isinstance(c["original_id"], int)
        assert isinstance(c["name"], str) and c["name"] and c["name"] == c["name"].strip()
        assert len(c["color"]) == 3 and all(isinstance(v, int) and 0 <= v <= 255
                                            for v in c["color"]), c
    # Every one of these datasets names its classes uniquely and numbers them once.
    assert len({c["name"] for c in cats}) == count
    assert len({c["original_id"] for c in cats}) == count


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - DERIVED))
def test_each_file_names_its_dataset_and_source(name):
    doc = json.loads((BUILTIN_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert doc["dataset"] == name
    repository, _, path = doc["source"].partition(", ")
    assert "/" in repository and "@" in repository, doc["source"]  # owner/name@commit
    assert path.split()[0].endswith((".py", ".json")), doc["source"]


def test_the_json_files_are_package_data():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["maskformer.data"]
    for p in BUILTIN_DIR.iterdir():
        if p.name.endswith(".json"):
            assert any(fnmatch.fnmatch(f"builtin/{p.name}", pat) for pat in patterns), p.name


def test_coco_panoptic_entries_and_the_converters_order():
    cats = builtin_categories("coco_panoptic")
    assert cats[0] == {"id": 0, "original_id": 1, "name": "person", "isthing": 1,
                       "color": [220, 20, 60]}
    assert cats[-1]["original_id"] == 200 and cats[-1]["name"] == "rug-merged"
    assert not cats[-1]["isthing"]
    # Things first (ids 1..90), then stuff (92..200).
    assert all(c["isthing"] for c in cats[:80]) and not any(c["isthing"] for c in cats[80:])
    assert max(c["original_id"] for c in cats[:80]) == 90
    assert cats[80]["name"] == "banner" and cats[80]["original_id"] == 92
    by_id = _by_original_id("coco_panoptic")
    assert by_id[3]["name"] == "car" and by_id[90]["name"] == "toothbrush"
    assert by_id[184]["name"] == "tree-merged" and by_id[187]["name"] == "sky-other-merged"
    assert 12 not in by_id and 91 not in by_id
    # The coco-panoptic converter, fed the official categories in any order, gives the same
    # contiguous ids: a converted official model's class i is this list's entry i.
    official = [{"id": c["original_id"], "name": c["name"], "isthing": c["isthing"],
                 "color": c["color"], "supercategory": "x"} for c in reversed(cats)]
    assert categories_from_annotations(official) == cats


def test_ade20k_150_entries():
    cats = builtin_categories("ade20k_150")
    assert [c["original_id"] for c in cats] == list(range(1, 151))  # SceneParsing labels
    assert cats[0]["name"] == "wall" and cats[-1]["name"] == "flag"
    assert cats[0]["color"] == [120, 120, 120]
    by_label = _by_original_id("ade20k_150")
    assert by_label[3]["name"] == "sky" and not by_label[3]["isthing"]
    assert by_label[9]["name"] == "window"  # the source's "window " (trailing space)
    assert by_label[13]["name"] == "person" and by_label[13]["isthing"]
    assert by_label[21]["name"] == "car" and by_label[21]["isthing"]
    assert by_label[8]["name"] == "bed" and by_label[8]["isthing"]
    assert by_label[150]["isthing"]


def test_coco_stuff_171_entries():
    cats = builtin_categories("coco_stuff_171")
    ids = [c["original_id"] for c in cats]
    assert ids == sorted(ids) and ids[0] == 1 and ids[-1] == 182
    # The 11 of COCO-Stuff's 91 thing ids that COCO never annotated are not classes.
    assert sorted(set(range(1, 183)) - set(ids)) == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]
    assert cats[-1]["name"] == "wood" and cats[81]["name"] == "blanket"
    things = [(c["original_id"], c["name"], c["color"]) for c in cats if c["isthing"]]
    assert things == [(c["original_id"], c["name"], c["color"])
                      for c in builtin_categories("coco_panoptic") if c["isthing"]]
    assert all(c["original_id"] >= 92 for c in cats if not c["isthing"])


def test_cityscapes_19_entries():
    cats = builtin_categories("cityscapes_19")
    assert cats[0] == {"id": 0, "original_id": 7, "name": "road", "isthing": 0,
                       "color": [128, 64, 128]}
    assert cats[18] == {"id": 18, "original_id": 33, "name": "bicycle", "isthing": 1,
                        "color": [119, 11, 32]}
    assert {c["name"] for c in cats if c["isthing"]} == {
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"}
    assert [c["original_id"] for c in cats] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24,
                                                25, 26, 27, 28, 31, 32, 33]


def test_mapillary_vistas_65_entries():
    cats = builtin_categories("mapillary_vistas_65")
    assert [c["original_id"] for c in cats] == list(range(65))  # v1.2 label values
    assert cats[0] == {"id": 0, "original_id": 0, "name": "Bird", "isthing": 1,
                       "color": [165, 42, 42]}
    assert cats[13]["name"] == "Road" and cats[13]["color"] == [128, 64, 128]
    assert cats[-1]["name"] == "Ego Vehicle"
    assert "Unlabeled" not in {c["name"] for c in cats}
    assert cats[55]["name"] == "Car" and cats[55]["isthing"]


def test_ade20k_full_847_entries():
    cats = builtin_categories("ade20k_full_847")
    assert cats[0]["name"] == "wall" and cats[0]["original_id"] == 2978
    assert cats[11]["name"].startswith("person") and cats[11]["original_id"] == 1831
    assert not any(c["isthing"] for c in cats)  # semantic only: the source has no split


def test_shapes_is_the_generators_table():
    cats = builtin_categories("shapes")
    assert [c["name"] for c in cats] == ["circle", "square", "triangle", "sky", "ground"]
    assert [c["original_id"] for c in cats] == [c["id"] for c in shapes.CATEGORIES]
    assert cats == categories_from_annotations(shapes.CATEGORIES)


@pytest.mark.parametrize(("name", "panoptic"), [
    ("coco_instance_80", "coco_panoptic"), ("ade20k_instance_100", "ade20k_150"),
    ("cityscapes_instance_8", "cityscapes_19")])
def test_instance_lists_are_the_panoptic_lists_things_renumbered(name, panoptic):
    things = [c for c in builtin_categories(panoptic) if c["isthing"]]
    assert builtin_categories(name) == [{**c, "id": i} for i, c in enumerate(things)]


def test_instance_list_entries():
    # detectron2's COCO instance metadata: contiguous 0..79 in ascending COCO id.
    coco = builtin_categories("coco_instance_80")
    assert [c["name"] for c in coco[:3]] == ["person", "bicycle", "car"]
    assert (coco[79]["name"], coco[79]["original_id"]) == ("toothbrush", 90)
    # Mask2Former's register_ade20k_instance.py: ADE_CATEGORIES' ids are ade20k_150's
    # contiguous ids (label - 1), ascending: 7 bed, 8 windowpane, 10 cabinet, 12 person, ...
    ade = builtin_categories("ade20k_instance_100")
    assert [c["original_id"] - 1 for c in ade[:5]] == [7, 8, 10, 12, 14]
    assert ade[0]["name"] == "bed" and ade[3]["name"] == "person"
    assert ade[-1]["original_id"] - 1 == 149 and ade[-1]["name"] == "flag"
    assert [c["name"] for c in builtin_categories("cityscapes_instance_8")] == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def test_a_copy_is_returned():
    cats = builtin_categories("cityscapes_19")
    cats[0]["name"] = "changed"
    cats[1]["color"][0] = 0
    cats.pop()
    fresh = builtin_categories("cityscapes_19")
    assert len(fresh) == 19 and fresh[0]["name"] == "road" and fresh[1]["color"][0] == 244


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'pascal'.*coco_panoptic.*ade20k_150.*shapes"):
        builtin_categories("pascal")


@pytest.mark.parametrize(("dataset", "num_classes", "expected"), [
    ("coco_panoptic", 133, "coco_panoptic"),
    ("coco_panoptic", 5, "shapes"),  # the shapes data are COCO panoptic files
    ("coco_panoptic", 7, None),
    ("coco_panoptic", 150, None),
    ("ade20k_semantic", 150, "ade20k_150"),
    ("ade20k_semantic", 847, "ade20k_full_847"),
    ("ade20k_semantic", 133, None),
    ("cityscapes_19", 19, "cityscapes_19"),  # a built-in name stands for itself
    ("cityscapes_19", 20, None),
    ("mapillary_vistas_65", 65, "mapillary_vistas_65"),
    ("pascal", 21, None),
    ("coco_instance", 80, "coco_instance_80"),
    ("coco_instance", 100, "ade20k_instance_100"),
    ("coco_instance", 8, "cityscapes_instance_8"),
    ("coco_instance", 133, None),
])
def test_builtin_for_dataset(dataset, num_classes, expected):
    found = builtin_for_dataset(dataset, num_classes)
    if expected is None:
        assert found is None
    else:
        assert found == builtin_categories(expected)


def test_every_experiment_on_a_built_in_dataset_gets_its_classes():
    covered = {}
    for name in list_experiments():
        config = get_experiment(name)
        cats = builtin_for_dataset(config.data.dataset, config.model.num_classes)
        if "smoke" in name:  # tiny test models with placeholder classes
            assert cats is None, name
            continue
        assert cats is not None, f"{name}: no built-in list for {config.data.dataset} " \
                                 f"with {config.model.num_classes} classes"
        assert len(cats) == config.model.num_classes
        covered[name] = cats
    assert len(covered["maskformer_coco_panoptic_r50"]) == 133
    assert covered["maskformer_ade20k_semantic_r50"][-1]["name"] == "flag"
    assert [c["name"] for c in covered["maskformer_demo"]][:3] == ["circle", "square",
                                                                   "triangle"]
