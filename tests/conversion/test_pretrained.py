"""Pretrained weights for the chosen parts of a fresh model (`train.init_checkpoint`).

Every checkpoint is written here in its format from random weights: detectron2's ImageNet
pickles (from PyTorch ResNets in detectron2's layout and names, `tests/conversion/test_r101c.py`),
a torchvision-layout state dict, Hugging Face ResNets (`save_pretrained`), the Swin release's
names (from the original Swin's reference parameters) and Hugging Face's Swin, and model
directories. A loaded backbone must give the reference implementation's features; the parts not
chosen must keep their values.
"""

import os
import pickle

import numpy as np
import pytest
from keras import ops

from maskformer.config import BackboneConfig, ModelConfig, SwinConfig
from maskformer.conversion.pretrained import load_init_checkpoint
from maskformer.errors import CheckpointError
from maskformer.experiments import get_experiment
from maskformer.model_dir import save_model, variable_keys, write_arrays
from maskformer.modeling.maskformer import build_model
from tests.conftest import reference_file
from tests.conversion.torch_utils import randomize_

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PARTS = ("backbone", "pixel_decoder", "predictor")
STAGES = ("res2", "res3", "res4", "res5")


def smoke_model(num_classes=7, **backbone):
    config = get_experiment("maskformer_smoke")
    config.model.num_classes = num_classes
    for key, value in backbone.items():
        setattr(config.model.backbone, key, value)
    return build_model(config.validate().model)


def values(model, parts=PARTS) -> dict[str, np.ndarray]:
    """The weights of `parts` by variable key."""
    ids = {id(v) for p in parts for v in getattr(model, p).weights}
    return {k: np.array(ops.convert_to_numpy(v)) for k, v in variable_keys(model).items()
            if id(v) in ids}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_features_match(model, reference_features, x):
    ours = model.backbone(x)
    for name in STAGES:
        ref = reference_features[name]
        got = np.asarray(ops.convert_to_numpy(ours[name]))
        assert got.shape == ref.shape, name
        err = np.abs(got - ref).max()
        assert err <= 1e-5 * np.abs(ref).max(), f"{name}: max |ours - ref| = {err:.3g}"


def torch_features(forward, x) -> dict[str, np.ndarray]:
    """Runs a PyTorch backbone on NHWC `x`; its res2..res5 as NHWC arrays."""
    import torch

    with torch.no_grad():
        out = forward(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    return {name: t.numpy().transpose(0, 2, 3, 1) for name, t in zip(STAGES, out, strict=True)}


def images(size=(70, 58), seed=3):
    return np.random.default_rng(seed).normal(size=(2, *size, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# PyTorch references
# ---------------------------------------------------------------------------------------------


def detectron2_resnet(blocks, stem, width, out, seed=0):
    """A ResNet with a 7x7 stem in detectron2's layout and names (frozen batch norm)."""
    torch = pytest.importorskip("torch")
    from tests.conversion.test_r101c import Bottleneck, ConvNorm

    class ResNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Module()
            self.stem.conv1 = ConvNorm(3, stem, 7, 2)
            cin = stem
            for s, n in enumerate(blocks):
                setattr(self, f"res{s + 2}", torch.nn.Sequential(*[
                    Bottleneck(cin if b == 0 else out * 2**s, width * 2**s, out * 2**s,
                               2 if (b == 0 and s > 0) else 1, 1) for b in range(n)]))
                cin = out * 2**s

        def forward(self, x):
            x = torch.relu(self.stem.conv1(x))
            x = torch.nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)
            features = []
            for s in range(len(blocks)):
                x = getattr(self, f"res{s + 2}")(x)
                features.append(x)
            return features

    model = ResNet().eval()
    randomize_(model, seed)
    return model


def torchvision_resnet(blocks, stem, width, out, num_classes=10, seed=0):
    """A ResNet in torchvision's layout and names (`conv1`, `bn1`, `layer1.0.downsample.0`,
    `fc`), with PyTorch's BatchNorm2d in eval mode."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                             nn.BatchNorm2d(cout))
                               if cin != cout or stride != 1 else None)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            cin = stem
            for s, n in enumerate(blocks):
                setattr(self, f"layer{s + 1}", nn.Sequential(*[
                    Bottleneck(cin if b == 0 else out * 2**s, width * 2**s, out * 2**s,
                               2 if (b == 0 and s > 0) else 1) for b in range(n)]))
                cin = out * 2**s
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)
            features = []
            for s in range(len(blocks)):
                x = getattr(self, f"layer{s + 1}")(x)
                features.append(x)
            return features

    model = ResNet().eval()
    randomize_(model, seed)
    with torch.no_grad():  # randomize_ knows `norm` names only; `bn` variances must be > 0
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(1000)
    return model


def smoke_backbone_sizes():
    bb = get_experiment("maskformer_smoke").model.backbone
    return bb.blocks(), bb.stem_channels, bb.width_per_group, bb.res2_out_channels


def write_detectron2_pickle(path, state: dict, **extra):
    """A detectron2 checkpoint as its converters write it."""
    with open(path, "wb") as f:
        pickle.dump({"model": state, **extra}, f)
    return path


# ---------------------------------------------------------------------------------------------
# ResNet backbones
# ---------------------------------------------------------------------------------------------


def test_detectron2_imagenet_resnet_pickle(tmp_path):
    """R-50.pkl as convert-torchvision-to-d2.py writes it: detectron2 names without `backbone.`,
    torchvision's classifier as `stem.fc`, and `__author__` / `matching_heuristics` beside."""
    reference = detectron2_resnet(*smoke_backbone_sizes())
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    state["stem.fc.weight"] = np.ones((10, 256), np.float32)
    state["stem.fc.bias"] = np.ones((10,), np.float32)
    path = write_detectron2_pickle(tmp_path / "R-50.pkl", state, __author__="torchvision",
                                   matching_heuristics=True)

    model = smoke_model()
    before = values(model, ("pixel_decoder", "predictor"))
    report = load_init_checkpoint(model, path, "backbone")

    x = images()
    assert_features_match(model, torch_features(reference, x), x)
    assert_same(values(model, ("pixel_decoder", "predictor")), before)
    assert report.loaded == len(model.backbone.weights) == 100
    assert report.format == "detectron2 ResNet" and report.parts == ["backbone"]
    lines = report.lines()
    assert lines[0] == (f"loaded backbone from {path} (detectron2 ResNet, __author__ "
                        "'torchvision'): 100 variables")
    assert "dropped the ImageNet classifier: 2 (stem.fc.weight, stem.fc.bias)" in lines
    assert (f"left at their initialisation: pixel_decoder ({len(model.pixel_decoder.weights)} "
            f"variables), predictor ({len(model.predictor.weights)} variables): not in "
            "train.init_checkpoint_modules") in lines


def test_detectron2_deeplab_stem_pickle(tmp_path):
    """R-103.pkl: the DeepLab stem's three convs (`stem.conv1`..`stem.conv3`), res5 multi-grid."""
    pytest.importorskip("torch")
    from tests.conversion.test_r101c import DeepLabResNet, r101c_tiny

    def forward(x):
        return list(reference(x).values())

    config = r101c_tiny()
    bb = config.model.backbone
    reference = DeepLabResNet(bb.stem_channels, bb.blocks(), bb.width_per_group,
                              bb.res2_out_channels, bb.res5_multi_grid).eval()
    randomize_(reference, seed=4)
    path = write_detectron2_pickle(
        tmp_path / "R-103.pkl", {k: v.numpy() for k, v in reference.state_dict().items()})

    model = build_model(config.model)
    report = load_init_checkpoint(model, path, ["backbone"])
    assert report.loaded == len(model.backbone.weights)
    x = images((67, 81))
    assert_features_match(model, torch_features(forward, x), x)


def test_torchvision_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    reference = torchvision_resnet(*smoke_backbone_sizes())
    path = tmp_path / "resnet50-tiny.pth"
    torch.save(reference.state_dict(), path)

    model = smoke_model()
    before = values(model, ("pixel_decoder", "predictor"))
    report = load_init_checkpoint(model, path)  # the default part: the backbone
    x = images()
    assert_features_match(model, torch_features(reference, x), x)
    assert_same(values(model, ("pixel_decoder", "predictor")), before)
    assert report.format == "torchvision ResNet" and report.loaded == 100
    assert report.dropped["the ImageNet classifier"] == ["fc.weight", "fc.bias"]
    # One step counter per BatchNorm: the stem's and three or four per block.
    assert len(report.dropped["BatchNorm step counters"]) == 1 + 3 * 5 + 4
    assert "bn1.num_batches_tracked" in report.dropped["BatchNorm step counters"]


def hf_resnet(seed=0):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    blocks, stem, width, out = smoke_backbone_sizes()
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=stem, hidden_sizes=[out * 2**s for s in range(4)],
        depths=blocks, layer_type="bottleneck", hidden_act="relu",
        downsample_in_first_stage=False, num_labels=10)
    assert out // 4 == width  # Hugging Face's bottleneck width is a quarter of its output
    model = transformers.ResNetForImageClassification(config).eval()
    randomize_(model, seed)
    return model


def hf_resnet_features(model):
    def forward(x):
        return model.resnet(x, output_hidden_states=True).hidden_states[1:]

    return forward


def test_hugging_face_resnet_folder(tmp_path):
    """ResNetForImageClassification's save_pretrained folder (`resnet.` names, safetensors)."""
    reference = hf_resnet()
    reference.save_pretrained(tmp_path / "hf-resnet")
    model = smoke_model()
    report = load_init_checkpoint(model, tmp_path / "hf-resnet", "backbone")
    assert report.source == str(tmp_path / "hf-resnet" / "model.safetensors")
    assert report.format == "Hugging Face ResNet" and report.loaded == 100
    assert sorted(report.dropped["the ImageNet classifier"]) == ["classifier.1.bias",
                                                                 "classifier.1.weight"]
    x = images()
    assert_features_match(model, torch_features(hf_resnet_features(reference), x), x)


def test_hugging_face_resnet_model_bin(tmp_path):
    """ResNetModel's own names (no `resnet.` prefix) in a torch.save `.bin` file."""
    torch = pytest.importorskip("torch")
    reference = hf_resnet(seed=5)
    torch.save(reference.resnet.state_dict(), tmp_path / "resnet.bin")
    model = smoke_model()
    report = load_init_checkpoint(model, tmp_path / "resnet.bin", "backbone")
    assert report.format == "Hugging Face ResNet" and report.loaded == 100
    x = images()
    assert_features_match(model, torch_features(hf_resnet_features(reference), x), x)


def test_hugging_face_resnet_with_another_layout_is_refused(tmp_path):
    reference = hf_resnet()
    reference.config.downsample_in_bottleneck = True  # stride 2 in the 1x1: same shapes
    reference.save_pretrained(tmp_path / "hf")
    model = smoke_model()
    before = values(model)
    with pytest.raises(CheckpointError, match="downsample_in_bottleneck=true"):
        load_init_checkpoint(model, tmp_path / "hf", "backbone")
    assert_same(values(model), before)


# ---------------------------------------------------------------------------------------------
# Model directories
# ---------------------------------------------------------------------------------------------


def test_model_directory_all_parts_with_another_class_count(tmp_path):
    """Fine-tuning a model on new classes: every weight from the directory but the class head,
    which stays newly initialised (and the report says so)."""
    config = get_experiment("maskformer_smoke")  # 7 classes
    source = build_model(config.model)
    save_model(source, config, tmp_path / "coco")
    model = smoke_model(num_classes=5)
    head = {k: v for k, v in values(model).items() if k.startswith("class_embed/")}
    assert sorted(head) == ["class_embed/bias", "class_embed/kernel"]
    trained = values(source)
    assert not np.array_equal(values(model)["predictor/query_embed"],
                              trained["predictor/query_embed"])

    report = load_init_checkpoint(model, tmp_path / "coco", "all")
    after = values(model)
    assert_same({k: v for k, v in after.items() if k not in head},
                {k: v for k, v in trained.items() if k not in head})
    assert_same({k: after[k] for k in head}, head)
    assert report.loaded == len(model.weights) - 2
    assert report.format == "model directory, model.weights.npz"
    note = ("left at their initialisation: 2 (class_embed/kernel, class_embed/bias): the "
            "checkpoint has 7 classes, the model 5 (model.num_classes): a new class head")
    assert note in report.lines()
    assert "random seed states (the run's own seed decides)" in report.dropped


def test_model_directory_chosen_parts_from_the_latest_checkpoint(tmp_path):
    """A run's directory without final weights: its latest checkpoint's network entries."""
    config = get_experiment("maskformer_smoke")
    source = build_model(config.model)
    directory = tmp_path / "run"
    (directory / "checkpoints").mkdir(parents=True)
    arrays = {f"network/{k}": v for k, v in values(source).items()}
    write_arrays(directory / "checkpoints" / "ckpt-2.npz",
                 {k: np.zeros_like(v) for k, v in arrays.items()})
    write_arrays(directory / "checkpoints" / "ckpt-10.npz",
                 {**arrays, "optimizer/iteration": np.array(10)})

    model = smoke_model()
    predictor = values(model, ("predictor",))
    report = load_init_checkpoint(model, directory, ["pixel_decoder", "backbone"])
    assert report.parts == ["backbone", "pixel_decoder"]
    assert report.format == "model directory, checkpoints/ckpt-10.npz"
    assert_same(values(model, ("backbone", "pixel_decoder")),
                values(source, ("backbone", "pixel_decoder")))
    assert_same(values(model, ("predictor",)), predictor)
    assert report.unused == len(model.predictor.weights)


# ---------------------------------------------------------------------------------------------
# Swin backbones
# ---------------------------------------------------------------------------------------------


# Tests of the renaming alone (NumPy) on models whose numerics have tests of their own on both
# Keras backends (tests/modeling/test_swin.py, tests/conversion/test_huggingface.py), and that
# take a minute to build eagerly on JAX: they run on the first backend only.
renaming_only = pytest.mark.backend_independent


def swin_model(swin: SwinConfig, image_size=(64, 64)):
    """A tiny MaskFormer on a Swin backbone, built on one image of `image_size` (a test that
    runs the backbone on that shape reuses what JAX compiled for it)."""
    config = ModelConfig(backbone=BackboneConfig(type="swin", swin=swin), num_classes=5,
                         pixel_decoder="fpn", conv_dim=32, mask_dim=32, num_queries=6,
                         hidden_dim=32, num_heads=4, dim_feedforward=64, dec_layers=2,
                         dropout=0.0, enforce_input_proj=True)
    return build_model(config, image_size=image_size)


@renaming_only
def test_swin_release_pickle(tmp_path):
    """The Swin release's state dict as detectron2-converted `.pkl`: `patch_embed`, `layers`,
    the classifier's `norm` and `head`, and buffers. The per-output norms norm0..norm3 are not
    in it and keep their initialisation; with them set too, the original's outputs follow."""
    import json

    z = np.load(reference_file("swin_backbone_tiny.npz"))
    kw = json.loads(str(z["config"]))["kwargs"]
    params = {k[len("param/backbone."):]: z[k] for k in z.files if k.startswith("param/backbone.")}
    assert len(params) == 133
    norms = {k: params.pop(k) for k in list(params) if k.split(".")[0] in
             ("norm0", "norm1", "norm2", "norm3")}
    assert len(norms) == 8
    top = kw["embed_dim"] * 2 ** (len(kw["depths"]) - 1)
    state = {**params, "norm.weight": np.ones(top, np.float32),
             "norm.bias": np.zeros(top, np.float32),
             "head.weight": np.zeros((1000, top), np.float32),
             "head.bias": np.zeros(1000, np.float32),
             "layers.0.blocks.1.attn_mask": np.zeros((4, 49, 49), np.float32)}
    path = write_detectron2_pickle(tmp_path / "swin_tiny_patch4_window7_224.pkl", state,
                                   __author__="third_party", matching_heuristics=True)

    swin = SwinConfig(embed_dim=kw["embed_dim"], depths=kw["depths"], num_heads=kw["num_heads"],
                      window_size=kw["window_size"], drop_path_rate=0.0)
    x = np.transpose(z["input/images_norm_0"][:1], (0, 2, 3, 1))  # NCHW -> NHWC
    model = swin_model(swin, x.shape[1:3])
    initial_norms = {k: v for k, v in values(model, ("backbone",)).items()
                     if k.startswith("backbone/norm")}
    report = load_init_checkpoint(model, path, "backbone")
    assert report.format == "Swin release"
    assert report.loaded == len(model.backbone.weights) - 8
    assert sorted(report.dropped) == ["buffers the model computes",
                                      "the ImageNet classifier and its final norm"]
    (kept,) = report.kept_initial.values()
    assert sorted(kept) == sorted(initial_norms)
    assert_same({k: v for k, v in values(model, ("backbone",)).items() if k in initial_norms},
                initial_norms)

    for s, norm in enumerate(model.backbone.norms):
        norm.gamma.assign(norms[f"norm{s}.weight"])
        norm.beta.assign(norms[f"norm{s}.bias"])
    expected = {name: np.transpose(z[f"output/0/{name}"][:1], (0, 2, 3, 1)) for name in STAGES}
    assert_features_match(model, expected, x)


# Hugging Face shrinks a window to a feature map smaller than it (the original does not): every
# stage of this input is larger than the window.
HF_SWIN = {"embed_dim": 8, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4], "window_size": 4}
HF_SWIN_INPUT = (160, 192)


@pytest.fixture(scope="module")
def hf_swin_target():
    """One model for the Hugging Face Swin tests (each sets its whole backbone)."""
    return swin_model(SwinConfig(**HF_SWIN, drop_path_rate=0.0), HF_SWIN_INPUT)


@renaming_only
@pytest.mark.parametrize("saved", ["save_pretrained", "state_dict"])
def test_hugging_face_swin_backbone(tmp_path, saved, hf_swin_target):
    """SwinBackbone, its output norms included: its feature maps. `save_pretrained` writes the
    names of Hugging Face's files (`attention.self.query`, `intermediate.dense`); the module's
    own state dict has those of transformers >= 5 (`attention.q_proj`, `mlp.fc1`)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.SwinConfig(
        image_size=HF_SWIN_INPUT[0], patch_size=4, drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"], **HF_SWIN)
    reference = transformers.SwinBackbone(hf_config).eval()
    randomize_(reference, seed=2 if saved == "save_pretrained" else 3)
    if saved == "save_pretrained":
        reference.save_pretrained(tmp_path / "hf-swin")
    else:
        (tmp_path / "hf-swin").mkdir()
        torch.save(reference.state_dict(), tmp_path / "hf-swin" / "swin.pth")

    model = hf_swin_target
    report = load_init_checkpoint(model, tmp_path / "hf-swin", "backbone")
    assert report.format == "Hugging Face Swin"
    assert report.loaded == len(model.backbone.weights) and not report.kept_initial
    x = images(HF_SWIN_INPUT, seed=6)[:1]
    with torch.no_grad():
        maps = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).feature_maps
    expected = {name: m.numpy().transpose(0, 2, 3, 1) for name, m in zip(STAGES, maps,
                                                                          strict=True)}
    assert_features_match(model, expected, x)


# ---------------------------------------------------------------------------------------------
# Errors: one line, naming the file, and nothing set
# ---------------------------------------------------------------------------------------------


def backbone_state(model, seed=0) -> dict[str, np.ndarray]:
    """Random weights in detectron2's ImageNet names (`stem.conv1.weight`, OIHW kernels) for
    `model`'s ResNet backbone, at scales that keep activations O(1)."""
    from maskformer.conversion.detectron2 import weight_map

    rng = np.random.default_rng(seed)
    state = {}
    for t in weight_map(model):
        (name,) = t.sources
        if not name.startswith("backbone."):
            continue
        shape = tuple(t.variable.shape)
        if len(shape) == 4:  # HWIO -> OIHW
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:3])), (shape[3], shape[2],
                                                                    *shape[:2]))
        elif name.endswith(("norm.weight", "running_var")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        state[name[len("backbone."):]] = value.astype(np.float32)
    return state


def refused(model, path, modules, match):
    before = values(model)
    with pytest.raises(CheckpointError, match=match) as error:
        load_init_checkpoint(model, path, modules)
    assert "\n" not in str(error.value)
    assert_same(values(model), before)
    return str(error.value)


def test_errors_are_one_line_and_set_nothing(tmp_path):
    model = smoke_model()
    state = backbone_state(model)
    good = write_detectron2_pickle(tmp_path / "R-50.pkl", state)

    refused(model, tmp_path / "nope.pkl", "backbone", "nope.pkl: train.init_checkpoint: no such")
    junk = write_detectron2_pickle(tmp_path / "junk.pkl", {"encoder.weight": np.zeros(3)})
    text = refused(model, junk, "backbone", "junk.pkl: not a checkpoint format this loader "
                                            r"knows \(names like encoder.weight\); expected")
    assert "torchvision 'conv1.weight'" in text
    refused(model, good, "all", "R-50.pkl: the detectron2 ResNet checkpoint holds backbone "
                                "weights, not pixel_decoder, predictor; set "
                                "train.init_checkpoint_modules to backbone")

    broken = dict(state)
    del broken["res3.0.conv2.weight"]
    broken["res2.0.conv1.weight"] = np.zeros((8, 16, 3, 3), np.float32)
    broken["res9.0.conv1.weight"] = np.zeros(3, np.float32)
    path = write_detectron2_pickle(tmp_path / "broken.pkl", broken)
    text = refused(model, path, "backbone", r"broken.pkl \(detectron2 ResNet, parts backbone\) "
                                            "does not fit the model")
    assert "missing (the original's names): 1 (backbone.res3.0.conv2.weight)" in text
    assert "unexpected: 1 (res9.0.conv1.weight)" in text
    assert ("mis-shaped: 1 (res2.0.conv1.weight (8, 16, 3, 3) for "
            "backbone/res2_0/conv1/conv/kernel (1, 1, 16, 8))") in text

    # A wider ResNet: every conv mis-shaped.
    wide = write_detectron2_pickle(tmp_path / "wide.pkl",
                                   backbone_state(smoke_model(width_per_group=16)))
    assert "mis-shaped: " in refused(model, wide, "backbone", "does not fit the model")

    # A Swin file for a ResNet backbone.
    swin = write_detectron2_pickle(tmp_path / "swin.pkl", {
        "patch_embed.proj.weight": np.zeros((8, 3, 4, 4), np.float32),
        "layers.0.blocks.0.norm1.weight": np.zeros(8, np.float32)})
    refused(model, swin, "backbone", "swin.pkl: a Swin release checkpoint, but the model's "
                                     r"backbone is 'resnet' \(model.backbone.type\)")


def test_model_directory_of_another_architecture_is_refused(tmp_path):
    config = get_experiment("maskformer_smoke_fpn")
    save_model(build_model(config.model), config, tmp_path / "fpn")
    model = smoke_model()  # transformer-encoder pixel decoder
    text = refused(model, tmp_path / "fpn", "all", r"fpn \(model directory, model.weights.npz, "
                                                   r"parts backbone, pixel_decoder, predictor\) "
                                                   "does not fit the model; missing: ")
    assert "pixel_decoder/encoder_0/" in text
    # The backbones are alike: that part alone loads.
    load_init_checkpoint(model, tmp_path / "fpn", "backbone")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(model, empty, "backbone", "empty: no model directory")


# ---------------------------------------------------------------------------------------------
# Whole MaskFormer checkpoints
# ---------------------------------------------------------------------------------------------


def test_detectron2_maskformer_checkpoint_for_new_classes(tmp_path, official):
    """A released model_final_*.pkl (the head's old names) for a model with other classes: all
    parts as the full converter sets them, but the class head."""
    from tests.modeling.test_official import (
        build,
        config_from_reference,
        load_reference,
        to_old_names,
    )

    _, ref, params = load_reference(official, "maskformer_tenc_tiny.npz")
    converted = build(ref, params, "new")
    classes = ref["sem_seg_head"]["num_classes"]
    state = {**to_old_names(params),
             "criterion.empty_weight": np.ones(classes + 1, np.float32),
             "pixel_mean": np.zeros((3, 1, 1), np.float32)}
    path = write_detectron2_pickle(tmp_path / "model_final.pkl", state)

    config = config_from_reference(ref)
    config.num_classes = classes + 2
    model = build_model(config)
    head = {k: v for k, v in values(model).items() if k.startswith("class_embed/")}
    report = load_init_checkpoint(model, path, "all")
    assert report.format == "detectron2 MaskFormer"
    assert report.loaded == len(model.weights) - 2
    expected = {k: v for k, v in values(converted).items() if not k.startswith("class_embed/")}
    after = values(model)
    assert_same({k: v for k, v in after.items() if k not in head}, expected)
    assert_same({k: after[k] for k in head}, head)
    assert report.kept_initial == {
        f"the checkpoint has {classes} classes, the model {classes + 2} (model.num_classes): "
        "a new class head": ["class_embed/kernel", "class_embed/bias"]}
    assert sorted(report.dropped["the criterion's class weights and the input normalisation"]) \
        == ["criterion.empty_weight", "pixel_mean"]

    # The backbone alone: the head's entries are not used, and say so.
    model = build_model(config)
    report = load_init_checkpoint(model, path, "backbone")
    assert_same(values(model, ("backbone",)), values(converted, ("backbone",)))
    assert report.unused == len([k for k in params if k.startswith("sem_seg_head.")])


@renaming_only
def test_hugging_face_maskformer_folder_for_new_classes(tmp_path):
    """A Hugging Face MaskFormer folder: every part as `maskformer convert` sets it, but the
    class head of a model with other classes."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from maskformer.config import ExperimentConfig
    from maskformer.conversion.huggingface import model_config_from_hf
    from maskformer.conversion.io import convert_checkpoint
    from tests.conversion.test_huggingface import hf_model

    hf_model(num_labels=7, num_queries=8, depths=(1, 1, 1, 1)).save_pretrained(tmp_path / "hf")
    converted, _ = convert_checkpoint("hf", tmp_path / "hf", ExperimentConfig())
    config = model_config_from_hf(tmp_path / "hf" / "config.json")
    config.num_classes = 3
    model = build_model(config)
    head = {k: v for k, v in values(model).items() if k.startswith("class_embed/")}
    report = load_init_checkpoint(model, tmp_path / "hf", "all")
    assert report.format == "Hugging Face MaskFormer"
    assert report.loaded == len(model.weights) - 2
    after = values(model)
    assert_same({k: v for k, v in after.items() if k not in head},
                {k: v for k, v in values(converted).items() if k not in head})
    assert_same({k: after[k] for k in head}, head)
