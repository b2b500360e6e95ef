"""Model directories carry their categories: from the training data's dataset.json, from an
experiment's built-in dataset list, or given; a count that does not fit the model is a one-line
error."""

import json

import pytest

from maskformer.config import apply_overrides
from maskformer.errors import ConfigError
from maskformer.experiments import get_experiment
from maskformer.model_dir import CATEGORIES_NAME, model_categories, save_model
from maskformer.modeling.maskformer import build_model
from tests.training.conftest import smoke_overrides

pytestmark = pytest.mark.backend_independent


def _smoke(*overrides):
    return apply_overrides(get_experiment("maskformer_smoke"), list(overrides))


def test_trained_model_keeps_the_datasets_categories(tmp_path, shapes_records):
    config = _smoke(*smoke_overrides(shapes_records))
    save_model(build_model(config.model), config, tmp_path)
    written = json.loads((tmp_path / CATEGORIES_NAME).read_text())
    dataset = json.loads(open(shapes_records["info"]).read())["categories"]
    assert [c["name"] for c in written["categories"]] == [c["name"] for c in dataset]
    assert [c["isthing"] for c in written["categories"]] == [c["isthing"] for c in dataset]
    assert written["source"] == shapes_records["info"]
    # The directory no longer needs the dataset: its categories are its own.
    config.data.dataset_info = str(tmp_path / "moved" / "dataset.json")
    (tmp_path / "config.yaml").write_text((tmp_path / "config.yaml").read_text().replace(
        shapes_records["info"], config.data.dataset_info))
    assert [c["name"] for c in model_categories(tmp_path)] == [c["name"] for c in dataset]


def test_builtin_dataset_categories(tmp_path):
    config = _smoke("model.num_classes=133", "data.dataset=coco_panoptic")
    save_model(build_model(config.model), config, tmp_path)
    categories = model_categories(tmp_path)
    assert len(categories) == 133 and sum(c["isthing"] for c in categories) == 80
    assert categories[0]["name"] == "person" and categories[0]["original_id"] == 1
    assert json.loads((tmp_path / CATEGORIES_NAME).read_text())["source"] == \
        "built-in coco_panoptic"


def test_given_categories_and_count_mismatch(tmp_path):
    config = _smoke("model.num_classes=3")
    model = build_model(config.model)
    with pytest.raises(ConfigError, match=r"given: 2 categories, but the model has 3 classes"):
        save_model(model, config, tmp_path, [{"name": "a"}, {"name": "b"}])
    save_model(model, config, tmp_path, [{"name": "a", "isthing": 1}, {"name": "b"},
                                         {"name": "c", "color": [1, 2, 3]}])
    categories = model_categories(tmp_path)
    assert [(c["id"], c["name"], c["isthing"]) for c in categories] == [
        (0, "a", 1), (1, "b", 0), (2, "c", 0)]
    assert categories[2]["color"] == [1, 2, 3]
    # A categories.json edited by hand to another count.
    path = tmp_path / CATEGORIES_NAME
    path.write_text(json.dumps({"categories": categories[:2]}))
    with pytest.raises(ConfigError, match=r"categories.json: 2 categories, but the model has 3"):
        model_categories(tmp_path)


def test_no_categories_anywhere_is_one_clear_error(tmp_path):
    config = _smoke("model.num_classes=3")
    save_model(build_model(config.model), config, tmp_path)
    assert not (tmp_path / CATEGORIES_NAME).exists()
    with pytest.raises(ConfigError, match=r"no class names: .*--set data.dataset_info=PATH"):
        model_categories(tmp_path)
