import pytest

from maskformer.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_yaml,
    split_params_override,
    to_yaml,
)
from maskformer.experiments import get_experiment, list_experiments
from maskformer.modeling.maskformer import build_model


@pytest.mark.parametrize("name", list_experiments())
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
