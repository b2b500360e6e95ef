import json
import warnings

import pytest

from maskformer.config import (
    ConfigError,
    ConfigWarning,
    ExperimentConfig,
    apply_overrides,
    load_yaml,
    split_params_override,
    to_yaml,
)
from maskformer.experiments import MASK2FORMER_ZOO, ZOO, get_experiment, list_experiments
from maskformer.modeling.maskformer import build_model


# The released models' experiments are built at full size, and their parameters counted, in
# tests/conversion/test_zoo_conversion.py (slow).
@pytest.mark.parametrize("name", [n for n in list_experiments() if n not in ZOO
                                  and n not in MASK2FORMER_ZOO])
def test_every_experiment_builds(name):
    config = get_experiment(name)
    assert config.name == name
    model = build_model(config.model, image_size=(32, 32))
    assert model.count_params() > 0


def test_required_experiments_exist():
    names = set(list_experiments())
    assert {"maskformer_coco_panoptic_r50", "maskformer_coco_panoptic_r101",
            "maskformer_ade20k_semantic_r50", "maskformer_smoke"} <= names
    coco = get_experiment("maskformer_coco_panoptic_r50").model
    assert (coco.pixel_decoder, coco.num_classes) == ("transformer_encoder", 133)
    ade = get_experiment("maskformer_ade20k_semantic_r50").model
    assert (ade.pixel_decoder, ade.num_classes, ade.size_divisibility) == ("fpn", 150, 32)
    assert get_experiment("maskformer_coco_panoptic_r101").model.backbone.blocks() == [3, 4, 23, 3]


def test_overrides_set_typed_values():
    config = get_experiment("maskformer_smoke")
    apply_overrides(config, ["model.num_queries=50", "train.learning_rate=3e-4",
                             "model.deep_supervision=false", "data.output_size=[96, 128]",
                             "model.pixel_decoder=fpn", "train.clip_norm=1"])
    assert config.model.num_queries == 50
    assert config.train.learning_rate == 3e-4
    assert config.model.deep_supervision is False
    assert config.data.output_size == [96, 128]
    assert config.model.pixel_decoder == "fpn"
    assert config.train.clip_norm == 1.0 and isinstance(config.train.clip_norm, float)


@pytest.mark.parametrize("override,message", [
    ("model.num_querys=5", "model.num_querys: unknown key"),
    ("modle.num_queries=5", "modle: unknown key"),
    ("model.num_queries=many", "model.num_queries: expected an integer"),
    ("model.num_queries=2.5", "model.num_queries: expected an integer"),
    ("model.deep_supervision=3", "model.deep_supervision: expected true/false"),
    ("model.backbone.depth.x=1", "model.backbone.depth.x: unknown key"),
    ("data.output_size=5", "data.output_size: expected a list"),
    ("model.num_queries", "expected key=value"),
])
def test_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        apply_overrides(ExperimentConfig(), [override])


def test_yaml_round_trip_and_errors(tmp_path):
    config = get_experiment("maskformer_smoke")
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(config))
    assert load_yaml(ExperimentConfig(), path) == config
    path.write_text("model:\n  backbone:\n    dept: 50\n")
    with pytest.raises(ConfigError, match=r"c.yaml: model.backbone.dept: unknown key"):
        load_yaml(ExperimentConfig(), path)
    path.write_text("model:\n  num_classes: seven\n")
    with pytest.raises(ConfigError, match=r"model.num_classes: expected an integer"):
        load_yaml(ExperimentConfig(), path)


def test_model_garden_params_override_syntax():
    parts = split_params_override("model.num_queries=50,data.output_size=[64, 64],train.seed=3")
    assert parts == ["model.num_queries=50", "data.output_size=[64, 64]", "train.seed=3"]
    config = apply_overrides(get_experiment("maskformer_smoke"), parts)
    assert config.data.output_size == [64, 64] and config.train.seed == 3
    nested = split_params_override("{model: {num_queries: 7}, train: {seed: 1}}")
    assert apply_overrides(ExperimentConfig(), nested).model.num_queries == 7


def test_invalid_model_value_is_reported():
    config = get_experiment("maskformer_smoke")
    apply_overrides(config, ["model.pixel_decoder=unet"])
    with pytest.raises(ConfigError, match="model.pixel_decoder"):
        config.validate()


def test_command_line_config_order_and_repeated_set(tmp_path):
    """--experiment, then --config YAML, then every --set (repeatable) and --params_override."""
    from maskformer.cli import build_parser
    from maskformer.cli.common import experiment_from_args

    yaml_file = tmp_path / "my.yaml"
    yaml_file.write_text("model:\n  num_queries: 30\ntrain:\n  seed: 5\n")
    args = build_parser().parse_args([
        "train", "--experiment", "maskformer_smoke", "--model-dir", str(tmp_path),
        "--config", str(yaml_file), "--set", "train.seed=6", "--set", "eval.batch_size=3",
        "--params_override", "train.steps=9"])
    config = experiment_from_args(args)
    assert config.name == "maskformer_smoke"
    assert (config.model.num_queries, config.train.seed) == (30, 6)
    assert (config.eval.batch_size, config.train.steps) == (3, 9)


# ---------------------------------------------------------------------------------------------
# Validation at load: every section, and combinations of sections
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_experiments())
def test_every_experiment_validates(name):
    config = get_experiment(name)
    assert config.validate() is config


@pytest.mark.parametrize("override,message", [
    ("model.num_queries=0", "model.num_queries: 0 is below the minimum 1"),
    ("model.num_classes=0", "model.num_classes: 0 is below the minimum 1"),
    ("model.dropout=1.5", r"model.dropout: 1.5 is not in \[0.0, 1.0\]"),
    ("model.pixel_std=[1, 0, 1]", "model.pixel_std: .* has a value <= 0"),
    ("model.pixel_mean=[1, 2]", "model.pixel_mean: expected 3 values"),
    ("loss.mask_weight=-1", "loss.mask_weight: -1.0 is below the minimum 0"),
    ("loss.no_object_weight=2", r"loss.no_object_weight: 2.0 is not in \[0.0, 1.0\]"),
    ("loss.focal_alpha=1.5", "loss.focal_alpha: 1.5 is above 1"),
    ("loss.matcher=greedy", "loss.matcher: 'greedy' is not one of 'hungarian', 'scipy'"),
    ("data.dataset=coco", "data.dataset: 'coco' is not one of"),
    ("data.augmentation=strong", "data.augmentation: 'strong' is not one of"),
    ("data.record_format=tfds", "data.record_format: 'tfds' is not one of"),
    ("data.record_format=model_garden", "data.dataset_info: data.record_format=model_garden"),
    ("data.mask_dtype=bool", "data.mask_dtype: 'bool' is not one of"),
    ("data.output_size=[64]", r"data.output_size: expected \[height, width\]"),
    ("data.output_size=[0, 64]", r"data.output_size: expected \[height, width\]"),
    ("data.eval_map_size=[64, -1]", r"data.eval_map_size: expected \[height, width\]"),
    ("data.crop_size=[]", r"data.crop_size: expected \[height, width\] of positive integers,"),
    ("data.min_scale_sizes=[]", "data.min_scale_sizes: expected a non-empty list"),
    ("data.crop_short_edges=[0]", "data.crop_short_edges: expected a non-empty list"),
    ("data.crop_range=[40, 20]", r"data.crop_range: expected \[min, max\]"),
    ("data.scale_range=[0.0, 2.0]", r"data.scale_range: expected \[min, max\]"),
    ("data.augmentation=jitter", r"data.augmentation"),
    ("data.max_instances=0", "data.max_instances: 0 is below the minimum 1"),
    ("data.eval_short_edge=0", "data.eval_short_edge: 0 is below the minimum 1"),
    ("data.shuffle_buffer=-1", "data.shuffle_buffer: -1 is below the minimum 0"),
    ("data.crop_pad_value=300", r"data.crop_pad_value: 300.0 is not in \[0.0, 255.0\]"),
    ("data.eval_output_size=[32, 32]", r"data.eval_output_size: \[32, 32\] cannot hold any "
                                       "image resized to a short edge of 64"),
    ("train.global_batch_size=0", "train.global_batch_size: 0 is below the minimum 1"),
    ("train.learning_rate=0", "train.learning_rate: 0.0 is not positive"),
    ("train.clip_norm=-1", "train.clip_norm: -1.0 is below the minimum 0"),
    ("train.step_boundaries=[8, 4]", r"train.step_boundaries: \[8, 4\] is not strictly"),
    ("train.step_boundaries=[0]", "train.step_boundaries: .* below step 1"),
    ("eval.object_mask_threshold=1.2", "eval.object_mask_threshold: 1.2 is not in"),
    ("eval.overlap_threshold=-0.1", "eval.overlap_threshold: -0.1 is not in"),
    ("eval.batch_size=0", "eval.batch_size: 0 is below the minimum 1"),
    ("eval.instance_top_k=0", "eval.instance_top_k: 0 is below the minimum 1"),
    ("eval.ignore_label=0", "eval.ignore_label: 0 is not supported; the input pipeline "
                            "marks void pixels with 255"),
])
def test_validation_rejects_bad_values_naming_the_key(override, message):
    config = apply_overrides(get_experiment("maskformer_smoke"), [
        "train.schedule=step", "train.step_boundaries=[5]", override])
    with pytest.raises(ConfigError, match=f"^{message}"):
        config.validate()


def test_num_classes_is_checked_against_the_dataset_info(tmp_path):
    info = tmp_path / "dataset.json"
    info.write_text(json.dumps({"categories": [{"id": k} for k in range(5)]}))
    config = apply_overrides(get_experiment("maskformer_smoke"), [f"data.dataset_info={info}"])
    with pytest.raises(ConfigError, match=r"^model.num_classes: 7, but data.dataset_info \(.*"
                                          r"dataset.json\) lists 5 categories"):
        config.validate()
    apply_overrides(config, ["model.num_classes=5"]).validate()
    # An unreadable or absent file is not an error here (the data code reports it when used).
    apply_overrides(config, [f"data.dataset_info={tmp_path / 'absent.json'}"]).validate()


@pytest.mark.parametrize("overrides,message", [
    (["data.max_instances=12", "model.num_queries=8"],
     "data.max_instances 12 is more than model.num_queries 8"),
    (["data.augmentation=ade20k", "data.crop_size=[96, 64]", "data.output_size=[64, 64]"],
     r"data.crop_size \[96, 64\] is larger than data.output_size \[64, 64\]"),
    (["train.schedule=step", "train.steps=100", "train.step_boundaries=[50, 100]"],
     r"train.step_boundaries \[100\] are not before train.steps 100"),
    (["train.warmup_steps=10", "train.steps=10"], "train.warmup_steps 10 is not below"),
    (["eval.panoptic=false", "eval.semantic=false", "eval.instance=false"],
     "eval.panoptic, eval.semantic and eval.instance are all false"),
])
def test_combinations_that_degrade_training_warn(overrides, message):
    config = apply_overrides(get_experiment("maskformer_demo"), overrides)
    with pytest.warns(ConfigWarning, match=message):
        config.validate()


def test_a_good_experiment_validates_without_warnings():
    config = get_experiment("maskformer_demo")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        config.validate()


def test_more_classes_than_the_void_label_validate_but_do_not_train():
    """A model of more than 255 classes (ADE20K-Full's 847) converts and predicts; training
    and evaluation on records, whose void label is 255, refuse it naming the key."""
    config = get_experiment("maskformer_smoke")
    apply_overrides(config, ["model.num_classes=300"])
    assert config.validate() is config
    with pytest.raises(ConfigError, match="model.num_classes: 300 classes include the id 255"):
        config.check_input_pipeline()
