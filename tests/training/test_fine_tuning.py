"""docs/fine-tuning.md on a tiny scale: a converted Hugging Face model with 7 classes, fine-tuned
on a folder of images and PNG labels with 3 other classes. Every part but the class head is
kept, the run says so, the loss falls, and predictions and evaluation name the new classes."""

import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from maskformer.cli import main
from maskformer.model_dir import CATEGORIES_NAME
from maskformer.plots import read_log

pytest.importorskip("torch")
pytest.importorskip("transformers")

OLD = ["cat", "dog", "grass", "sky", "road", "tree", "person"]
NEW = ["water", "sand", "boat"]
COLOURS = {0: (40, 90, 200), 1: (220, 200, 120), 2: (200, 40, 30)}


def _hf_tiny(folder):
    """A Hugging Face MaskFormer small enough to train in seconds (ResNet widths 32..256)."""
    import torch
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, ResNetConfig

    backbone = ResNetConfig(depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 128, 256],
                            embedding_size=16, layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = MaskFormerConfig(backbone_config=backbone, num_labels=len(OLD), num_queries=8,
                              fpn_feature_size=32, mask_feature_size=32)
    decoder = config.decoder_config
    decoder.num_queries, decoder.d_model, decoder.decoder_layers = 8, 32, 2
    decoder.encoder_layers, decoder.decoder_attention_heads, decoder.decoder_ffn_dim = 0, 4, 64
    config.id2label = dict(enumerate(OLD))
    config.label2id = {n: i for i, n in enumerate(OLD)}
    torch.manual_seed(0)
    MaskFormerForInstanceSegmentation(config).save_pretrained(folder)


def _scene(seed: int, size: int = 64):
    """Water below a sand bank, a boat on the water; 255 on a 1-pixel line between water and
    sand (an unlabelled boundary)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    shore = int(rng.integers(size // 4, size // 2))
    label[:shore] = 1
    top, left = int(rng.integers(shore + 4, size - 14)), int(rng.integers(0, size - 20))
    label[top:top + 10, left:left + 20] = 2
    label[shore] = 255
    image = np.zeros((size, size, 3), np.uint8)
    for k, colour in COLOURS.items():
        image[label == k] = colour
    image[label == 255] = 128
    noise = rng.integers(-20, 21, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8), label


def _folder(root, count, seed):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(count):
        image, label = _scene(seed + i)
        Image.fromarray(image).save(root / "images" / f"{i:04d}.jpg", quality=95)
        Image.fromarray(label).save(root / "labels" / f"{i:04d}.png")


def test_fine_tune_a_converted_model_on_new_classes(tmp_path, capsys):
    _hf_tiny(tmp_path / "hf")
    published = tmp_path / "published"
    assert main(["convert", "--from", "hf", str(tmp_path / "hf"), "--out", str(published)]) == 0

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(NEW) + "\n")
    for split, count, seed in (("train", 8, 0), ("val", 2, 100)):
        _folder(tmp_path / "mydata" / split, count, seed)
        assert main(["data", "semantic", "--images", str(tmp_path / "mydata" / split / "images"),
                     "--labels", str(tmp_path / "mydata" / split / "labels"),
                     "--classes", str(classes), "--out", str(tmp_path / "records" / split),
                     "--no-progress"]) == 0
    capsys.readouterr()

    # The published model's architecture, the smoke experiment's small-image data settings.
    architecture = tmp_path / "architecture.yaml"
    model = yaml.safe_load((published / "config.yaml").read_text())["model"]
    architecture.write_text(yaml.safe_dump({"model": model}))
    run = tmp_path / "run"
    records = tmp_path / "records"
    assert main([
        "train", "--experiment", "maskformer_smoke_fpn", "--model-dir", str(run),
        "--config", str(architecture), "--steps", "40", "--set",
        f"train.init_checkpoint={published}", "train.init_checkpoint_modules=all",
        "model.num_classes=3", "data.dataset=semantic", "data.augmentation=none",
        f"data.train_files={records}/train-*.tfrecord",
        f"data.val_files={records}/val-*.tfrecord", f"data.dataset_info={records}/dataset.json",
        "data.deterministic=true", "data.seed=0", "data.max_instances=8", "train.learning_rate=1e-3",
        "train.checkpoint_every=40", "train.log_every=1", "eval.panoptic=false",
        "loss.matcher=scipy"]) == 0
    out = capsys.readouterr().out
    assert f"init_checkpoint: loaded backbone, pixel_decoder, predictor from {published}" in out
    assert ("init_checkpoint: left at their initialisation: 2 (class_embed/kernel, "
            "class_embed/bias): the checkpoint has 7 classes, the model 3 (model.num_classes): "
            "a new class head") in out

    losses = [e["step_loss"] for e in read_log(run / "train_log.jsonl")]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:5]), losses

    categories = json.loads((run / CATEGORIES_NAME).read_text())["categories"]
    assert [c["name"] for c in categories] == NEW

    assert main(["predict", str(tmp_path / "mydata" / "val" / "images"), "--model-dir",
                 str(run), "--out", str(tmp_path / "predictions")]) == 0
    named = json.loads((tmp_path / "predictions" / "0000_semantic.json").read_text())
    assert named["classes"] and {c["name"] for c in named["classes"]} <= set(NEW)

    assert main(["evaluate", "--model-dir", str(run)]) == 0
    out = capsys.readouterr().out
    for name in NEW:  # the per-class table
        assert re.search(rf"^{name} +[-\d.]+ +[-\d.]+$", out, re.MULTILINE), out
