"""Pretrained weights at the start of training: `train.init_checkpoint` and
`train.init_checkpoint_modules` (the Model Garden's convention).

A freshly built model takes the weights of some of its parts ("backbone", "pixel_decoder",
"predictor", or "all" three) from one of:

- a model directory (`maskformer convert` output or a trained run), or its `.npz` weights or
  checkpoint file: the parts' variables by name;
- detectron2's ImageNet backbones, as the original configs name them: `R-50.pkl` / `R-101.pkl`
  (torchvision's weights in detectron2's names, written by detectron2's
  `tools/convert-torchvision-to-d2.py`: `stem.conv1.weight`, `res2.0.shortcut.norm.bias`, and the
  classifier as `stem.fc.*`), `R-103.pkl` (the DeepLab stem, `stem.conv1`..`stem.conv3`), and
  the Swin `.pkl` files converted from the Swin release (its state dict: `patch_embed.*`,
  `layers.{s}.blocks.{b}.*`, `layers.{s}.downsample.*`, and the classifier's `norm.*`,
  `head.*`);
- a torchvision ResNet state dict (`conv1.weight`, `layer1.0.downsample.0.weight`, `fc.*`);
- a Hugging Face ResNet (`ResNetModel`, `ResNetForImageClassification`, `ResNetBackbone`) or
  Swin (`SwinModel`, `SwinForImageClassification`, `SwinBackbone`);
- a whole MaskFormer or Mask2Former checkpoint, detectron2's (`model_final_*.pkl`) or Hugging
  Face's (`MaskFormerForInstanceSegmentation`, `Mask2FormerForUniversalSegmentation`);

each as `.safetensors`, `.bin`, `.pth` or `.pkl`, or a folder holding one of them. The format is
recognised from the tensor names. Every format but a model directory is renamed to the
original's names (MaskFormer's or Mask2Former's: `backbone.res2.0.conv1.weight`,
`sem_seg_head.predictor.query_feat.weight`) and set through the detectron2 weight map
(`detectron2.weight_map`) for the chosen parts only.

Loading is strict within each chosen part: every variable of the part is set from the file, and
every tensor of the file that belongs to the part is used, or `CheckpointError` lists the
missing, unexpected and mis-shaped names and nothing is set. The exceptions are named in the
report (`InitReport.lines`): entries that are no weights of ours (ImageNet classifiers,
BatchNorm's `num_batches_tracked`, buffers the model computes) are dropped; a class head for
another number of classes (fine-tuning on new classes) and the per-output norms of a Swin
backbone, which ImageNet Swin models do not have, keep their initialisation, as in the original.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskformer.errors import CheckpointError, ConfigError

PARTS = ("backbone", "pixel_decoder", "predictor")
# The original's state-dict name prefix of each part.
_NAMESPACES = (("backbone.", "backbone"), ("sem_seg_head.pixel_decoder.", "pixel_decoder"),
               ("sem_seg_head.predictor.", "predictor"))
_CLASS_HEAD = "sem_seg_head.predictor.class_embed."
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".pkl", ".npz")

# File entries that are not weights of any model here, whatever the format.
_BATCH_NORM_COUNTERS = ("BatchNorm step counters", r"(.*\.)?num_batches_tracked")
_COMPUTED_BUFFERS = ("buffers the model computes",
                     r"(.*\.)?(relative_position_index|attn_mask)")
_IMAGENET_HEAD = "the ImageNet classifier"
_SWIN_OUTPUT_NORMS = r"backbone\.norm\d+\.(weight|bias)"
_SWIN_OUTPUT_NORMS_REASON = ("the norms of the outputs res2..res5, which an ImageNet Swin does "
                             "not have (the original starts them from their initialisation too)")


def resolve_parts(modules: str | list[str]) -> list[str]:
    """`train.init_checkpoint_modules` as a list of parts, in model order."""
    modules = [modules] if isinstance(modules, str) else list(modules)
    unknown = [m for m in modules if m not in ("all", *PARTS)]
    if unknown or not modules:
        raise ConfigError(f"train.init_checkpoint_modules: {modules} is not 'all' or a list "
                          f"of {', '.join(PARTS)}")
    return list(PARTS) if "all" in modules else [p for p in PARTS if p in modules]


@dataclass
class InitReport:
    """What `load_init_checkpoint` set and what it left alone."""

    source: str
    format: str
    parts: list[str]
    loaded: int  # variables set from the file
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. detectron2's __author__
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> file entries
    kept_initial: dict[str, list[str]] = field(default_factory=dict)  # reason -> variable keys
    not_chosen: dict[str, int] = field(default_factory=dict)  # part -> variables left alone
    unused: int = 0  # file entries of the parts not chosen

    def lines(self) -> list[str]:
        """The report as log lines."""
        author = self.metadata.get("__author__")
        what = self.format + (f", __author__ {author!r}" if author else "")
        lines = [f"loaded {', '.join(self.parts)} from {self.source} ({what}): "
                 f"{self.loaded} variables"]
        for reason, names in self.dropped.items():
            lines.append(f"dropped {reason}: {_listing(names)}")
        if self.unused:
            lines.append(f"not used: {self.unused} file entries of parts not in "
                         "train.init_checkpoint_modules")
        for reason, keys in self.kept_initial.items():
            lines.append(f"left at their initialisation: {_listing(keys)}: {reason}")
        if self.not_chosen:
            counts = ", ".join(f"{part} ({n} variables)" for part, n in self.not_chosen.items())
            lines.append(f"left at their initialisation: {counts}: not in "
                         "train.init_checkpoint_modules")
        return lines


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', ...' if len(names) > limit else ''})"


def _problems(source: str, what: str, problems: list[tuple[str, list[str]]]) -> CheckpointError:
    text = "; ".join(f"{title}: {_listing(names, 10)}" for title, names in problems if names)
    return CheckpointError(f"{source} ({what}) does not fit the model; {text}")


# ---------------------------------------------------------------------------------------------
# Formats: a checkpoint's names renamed to the original MaskFormer's
# ---------------------------------------------------------------------------------------------


@dataclass
class Converted:
    """A checkpoint's tensors under the original MaskFormer's names.

    `origin` maps each new name back to the file's own name (for messages); `unknown` holds the
    file names no rule of the format maps, reported as unexpected; `optional` is a pattern of
    original names the format does not have by nature, whose variables keep their
    initialisation (`optional_reason` says why); `backbone` is the backbone type of a
    backbone-only format ("resnet" or "swin"; None for whole models); `architecture` that of a
    whole model ("maskformer" or "mask2former"; None for backbones).
    """

    format: str
    state: dict[str, np.ndarray]
    origin: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    optional: str = ""
    optional_reason: str = ""
    backbone: str | None = None
    architecture: str | None = None


Rule = tuple[str, str | Callable[[re.Match], str]]


def _drop(state: Mapping[str, np.ndarray], rules: list[tuple[str, str]]):
    """Splits off the entries that fully match a rule's pattern: (kept, {reason: names})."""
    kept, dropped = {}, {}
    for name, value in state.items():
        for reason, pattern in rules:
            if re.fullmatch(pattern, name):
                dropped.setdefault(reason, []).append(name)
                break
        else:
            kept[name] = value
    return kept, dropped


def _rename(fmt: str, state: Mapping[str, np.ndarray], rules: list[Rule], drops, prefix: str,
            backbone: str) -> Converted:
    """A backbone-only format: drops, then renames by the first rule that fully matches."""
    kept, dropped = _drop(state, [_BATCH_NORM_COUNTERS, *drops])
    out = Converted(fmt, {}, dropped=dropped, backbone=backbone)
    for name, value in kept.items():
        for pattern, repl in rules:
            match = re.fullmatch(pattern, name)
            if match:
                new = prefix + (repl(match) if callable(repl) else match.expand(repl))
                out.state[new] = value
                out.origin[new] = name
                break
        else:
            out.unknown.append(name)
    return out


def _strip(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Removes `prefix` from the names that carry it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _detectron2_resnet(state):
    if "stem.conv1.weight" not in state or not any(k.startswith("res2.") for k in state):
        return None
    # convert-torchvision-to-d2.py turns torchvision's `fc` into `stem.fc`; detectron2's own
    # classification ResNet calls it `linear`.
    return _rename("detectron2 ResNet", state, [(r"(stem|res\d)\..*", r"\g<0>")],
                   [(_IMAGENET_HEAD, r"(stem\.)?(fc|linear)\.(weight|bias)")], "backbone.",
                   "resnet")


def _tv_block(m: re.Match) -> str:
    return f"res{int(m[1]) + 1}.{m[2]}"  # torchvision's layer1 is res2


# The renaming of detectron2's tools/convert-torchvision-to-d2.py (whose `stem.fc` is dropped here).
_TORCHVISION_RULES: list[Rule] = [
    (r"conv1\.weight", "stem.conv1.weight"),
    (r"bn1\.(.*)", r"stem.conv1.norm.\1"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"{_tv_block(m)}.conv{m[3]}.weight"),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(.*)", lambda m: f"{_tv_block(m)}.conv{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"{_tv_block(m)}.shortcut.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(.*)", lambda m: f"{_tv_block(m)}.shortcut.norm.{m[3]}"),
]


def _torchvision_resnet(state):
    if "conv1.weight" not in state or not any(k.startswith("layer1.") for k in state):
        return None
    return _rename("torchvision ResNet", state, _TORCHVISION_RULES,
                   [(_IMAGENET_HEAD, r"fc\.(weight|bias)")], "backbone.", "resnet")


def _hf_stage(m: re.Match) -> str:
    return f"res{int(m[1]) + 2}.{m[2]}"


_HF_RESNET_RULES: list[Rule] = [
    (r"embedder\.embedder\.convolution\.weight", "stem.conv1.weight"),
    (r"embedder\.embedder\.normalization\.(.*)", r"stem.conv1.norm.\1"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.weight",
     lambda m: f"{_hf_stage(m)}.shortcut.weight"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.(.*)",
     lambda m: f"{_hf_stage(m)}.shortcut.norm.{m[3]}"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.convolution\.weight",
     lambda m: f"{_hf_stage(m)}.conv{int(m[3]) + 1}.weight"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.normalization\.(.*)",
     lambda m: f"{_hf_stage(m)}.conv{int(m[3]) + 1}.norm.{m[4]}"),
]


def _hf_resnet(state):
    state = _strip(state, "resnet.")  # ResNetForImageClassification
    if "embedder.embedder.convolution.weight" not in state:
        return None
    return _rename("Hugging Face ResNet", state, _HF_RESNET_RULES,
                   [(_IMAGENET_HEAD, r"classifier\.\d+\.(weight|bias)")], "backbone.", "resnet")


def _swin_release(state):
    if "patch_embed.proj.weight" not in state or not any(k.startswith("layers.") for k in state):
        return None
    out = _rename("Swin release", state, [(r"(patch_embed|layers)\..*", r"\g<0>")],
                  [_COMPUTED_BUFFERS,
                   (_IMAGENET_HEAD + " and its final norm", r"(head|norm)\.(weight|bias)")],
                  "backbone.", "swin")
    out.optional, out.optional_reason = _SWIN_OUTPUT_NORMS, _SWIN_OUTPUT_NORMS_REASON
    return out


_BLOCK = r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
# Hugging Face Swin names, as files hold them (and as transformers >= 5 names the modules),
# to the Swin release's.
_HF_SWIN_RULES: list[Rule] = [
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"embeddings\.norm\.(weight|bias)", r"patch_embed.norm.\1"),
    (_BLOCK + r"layernorm_before\.(weight|bias)", r"layers.\1.blocks.\2.norm1.\3"),
    (_BLOCK + r"layernorm_after\.(weight|bias)", r"layers.\1.blocks.\2.norm2.\3"),
    (_BLOCK + r"attention\.(self|relative_position_bias)\.relative_position_bias_table",
     r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (_BLOCK + r"attention\.self\.(query|key|value)\.(weight|bias)",
     lambda m: f"layers.{m[1]}.blocks.{m[2]}.attn.{m[3][0]}_part.{m[4]}"),
    (_BLOCK + r"attention\.([qkv])_proj\.(weight|bias)", r"layers.\1.blocks.\2.attn.\3_part.\4"),
    (_BLOCK + r"attention\.(output\.dense|o_proj)\.(weight|bias)",
     r"layers.\1.blocks.\2.attn.proj.\4"),
    (_BLOCK + r"(intermediate\.dense|mlp\.fc1)\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc1.\4"),
    (_BLOCK + r"(output\.dense|mlp\.fc2)\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc2.\4"),
    (r"encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)",
     r"layers.\1.downsample.\2.\3"),
    # SwinBackbone's norms of its outputs stage1..stage4: the original's norm0..norm3.
    (r"hidden_states_norms\.stage(\d)\.(weight|bias)", lambda m: f"norm{int(m[1]) - 1}.{m[2]}"),
]


def _hf_swin(state):
    state = _strip(state, "swin.")
    if "embeddings.patch_embeddings.projection.weight" not in state:
        return None
    out = _rename("Hugging Face Swin", state, _HF_SWIN_RULES,
                  [_COMPUTED_BUFFERS,
                   (_IMAGENET_HEAD + " and its final norm",
                    r"(classifier|layernorm)\.(weight|bias)")],
                  "backbone.", "swin")
    # q, k and v are separate Linear layers in Hugging Face's Swin, one fused `qkv` in the
    # original (output rows q, then k, then v).
    for name in [n for n in out.state if ".attn.q_part." in n]:
        parts = [name.replace(".q_part.", f".{p}_part.") for p in "qkv"]
        if all(p in out.state for p in parts):
            fused = name.replace(".q_part.", ".qkv.")
            out.state[fused] = np.concatenate([out.state.pop(p) for p in parts], axis=0)
            out.origin[fused] = ", ".join(out.origin.pop(p) for p in parts)
    for name in [n for n in out.state if "_part." in n]:  # a q, k or v without the others
        out.unknown.append(out.origin.pop(name))
        del out.state[name]
    if not any(re.fullmatch(_SWIN_OUTPUT_NORMS, n) for n in out.state):
        out.optional, out.optional_reason = _SWIN_OUTPUT_NORMS, _SWIN_OUTPUT_NORMS_REASON
    return out


def _maskformer(fmt: str, state, architecture: str) -> Converted:
    from maskformer.conversion.detectron2 import IGNORED_KEYS

    kept, dropped = _drop(state, [
        _BATCH_NORM_COUNTERS, _COMPUTED_BUFFERS,
        ("the criterion's class weights and the input normalisation",
         "|".join(re.escape(k) for k in IGNORED_KEYS))])
    return Converted(fmt, kept, {k: k for k in kept}, dropped, architecture=architecture)


def _hf_maskformer(state):
    if not any(k.startswith("model.pixel_level_module.") for k in state):
        return None
    from maskformer.conversion.huggingface import hf_architecture, rename_state_dict

    architecture = hf_architecture(state)
    name = "Mask2Former" if architecture == "mask2former" else "MaskFormer"
    return _maskformer(f"Hugging Face {name}", rename_state_dict(state), architecture)


def _detectron2_maskformer(state):
    if not any(k.startswith(("backbone.", "sem_seg_head.")) for k in state):
        return None
    from maskformer.conversion.detectron2 import normalize_names

    state = normalize_names(state, "auto")
    # Mask2Former's decoder starts from learned query features; MaskFormer's from zeros.
    mask2former = "sem_seg_head.predictor.query_feat.weight" in state
    return _maskformer(f"detectron2 {'Mask2Former' if mask2former else 'MaskFormer'}", state,
                       "mask2former" if mask2former else "maskformer")


# Tried in order; each returns None when the names are not its format's.
FORMATS = (_detectron2_maskformer, _hf_maskformer, _detectron2_resnet, _torchvision_resnet,
           _hf_resnet, _swin_release, _hf_swin)
_EXPECTED = ("a model directory (config.yaml + model.weights.npz), a MaskFormer or "
             "Mask2Former checkpoint (detectron2 'backbone.*', 'sem_seg_head.*'; Hugging Face "
             "'model.pixel_level_module.*'), a ResNet (detectron2 'stem.conv1.weight', "
             "'res2.0.*'; torchvision 'conv1.weight', 'layer1.0.*'; Hugging Face "
             "'embedder.embedder.*') or a Swin (release 'patch_embed.*', 'layers.*'; Hugging "
             "Face 'embeddings.patch_embeddings.*')")


def convert_names(state: Mapping[str, np.ndarray], source: str) -> Converted:
    """Recognises the format of `state` from its names and renames it to the original's.

    Raises:
        CheckpointError: no known format fits, naming `source` and what was expected.
    """
    for fmt in FORMATS:
        converted = fmt(state)
        if converted is not None:
            return converted
    names = sorted(state)[:4]
    raise CheckpointError(f"{source}: not a checkpoint format this loader knows (names like "
                          f"{', '.join(names) or 'none'}); expected {_EXPECTED}")


# ---------------------------------------------------------------------------------------------
# Reading the source
# ---------------------------------------------------------------------------------------------


def _is_model_dir(path: Path) -> bool:
    from maskformer.model_dir import CONFIG_NAME, LEGACY_WEIGHTS_NAME, WEIGHTS_NAME

    return any((path / n).exists() for n in (CONFIG_NAME, WEIGHTS_NAME, LEGACY_WEIGHTS_NAME,
                                             "checkpoints"))


def resolve_source(path: str | Path) -> Path:
    """The model directory or weights file `path` names: the path itself, or the one weights
    file of a folder (Hugging Face's model.safetensors or pytorch_model.bin first)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: train.init_checkpoint: no such file or folder")
    if not path.is_dir() or _is_model_dir(path):
        return path
    from maskformer.conversion.io import hf_weights_file

    hf_file = hf_weights_file(path)
    if hf_file is not None:
        return hf_file
    found = sorted(p.name for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES)
    if len(found) == 1:
        return path / found[0]
    if found:
        raise CheckpointError(f"{path}: {len(found)} weights files ({', '.join(found[:6])}); "
                              "give train.init_checkpoint the one to start from")
    raise CheckpointError(f"{path}: no model directory (config.yaml, model.weights.npz) and no "
                          f"weights file ({', '.join(_WEIGHT_SUFFIXES)}) here")


def read_model_arrays(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """A model directory's (or `.npz` weights file's) network arrays, by variable key, and
    which file they come from: model.weights.npz, else the latest training checkpoint, else
    the Keras weights of older directories."""
    from maskformer.model_dir import (
        LEGACY_WEIGHTS_NAME,
        NETWORK,
        WEIGHTS_NAME,
        checkpoint_paths,
        load_model,
        network_arrays,
        read_arrays,
    )

    if path.is_dir():
        file = path / WEIGHTS_NAME
        if not file.is_file():
            checkpoints = checkpoint_paths(path)
            file = checkpoints[-1][1] if checkpoints else None
        if file is None:
            if not (path / LEGACY_WEIGHTS_NAME).is_file():
                raise CheckpointError(f"{path}: a model directory without weights (no "
                                      f"{WEIGHTS_NAME}, checkpoints/ckpt-*.npz or "
                                      f"{LEGACY_WEIGHTS_NAME})")
            arrays = network_arrays(load_model(path))
            file = path / LEGACY_WEIGHTS_NAME
        else:
            arrays = read_arrays(file)
    else:
        file, arrays = path, read_arrays(path)
    network = {k[len(NETWORK):]: v for k, v in arrays.items() if k.startswith(NETWORK)}
    if not network:
        raise CheckpointError(f"{file}: no network weights ('{NETWORK}*' entries); expected a "
                              "model directory's model.weights.npz or a training checkpoint")
    return network, str(file.relative_to(path)) if path.is_dir() else file.name


def _check_hf_config(file: Path) -> None:
    """Refuses Hugging Face ResNets (alone, or the backbone of an HF MaskFormer or Mask2Former)
    whose weights fit but whose layout is not ours."""
    config = file.parent / "config.json"
    if file.suffix.lower() not in (".safetensors", ".bin") or not config.is_file():
        return
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        return  # not a Hugging Face config; the names decide
    if not isinstance(values, dict):
        return
    if values.get("model_type") in ("maskformer", "mask2former"):
        values = values.get("backbone_config") or {}  # the ResNet inside a whole model
    if not isinstance(values, dict) or values.get("model_type") != "resnet":
        return
    if values.get("layer_type", "bottleneck") != "bottleneck":
        raise CheckpointError(f"{config}: a ResNet of {values['layer_type']!r} layers; the "
                              "backbone is a bottleneck ResNet")
    for key in ("downsample_in_bottleneck", "downsample_in_first_stage"):
        if values.get(key):
            raise CheckpointError(f"{config}: {key}=true; the backbone has the stride-2 in the "
                                  "3x3 conv and none in res2 (torchvision's and detectron2's "
                                  "layout)")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _part_of(network) -> dict[int, str]:
    """The part of every weight of `network`, by id (the class and mask heads belong to the
    predictor). Keras' random seed states are not weights and are left out."""
    return {id(v): part for part in PARTS for v in getattr(network, part).weights}


def _namespace(name: str) -> str | None:
    for prefix, part in _NAMESPACES:
        if name.startswith(prefix):
            return part
    return None


def _not_chosen(network, parts: list[str]) -> dict[str, int]:
    return {p: len(getattr(network, p).weights) for p in PARTS if p not in parts}


def _class_count_note(file_classes: int, model_classes: int) -> str:
    return (f"the checkpoint has {file_classes} classes, the model {model_classes} "
            "(model.num_classes): a new class head")


def load_model_arrays(network, arrays: Mapping[str, np.ndarray], parts: list[str],
                      source: str, fmt: str) -> InitReport:
    """Sets the chosen parts of `network` from a model directory's arrays (variable keys)."""
    from maskformer.model_dir import variable_keys

    part_of = _part_of(network)
    keys = variable_keys(network)
    head = {id(network.predictor.class_embed.kernel), id(network.predictor.class_embed.bias)}
    # A file entry's part, from the first component of its key (the class and mask heads sit
    # at the top level, beside the predictor).
    roots: dict[str, str] = {}
    for key, variable in keys.items():
        if id(variable) in part_of:
            roots.setdefault(key.split("/")[0], part_of[id(variable)])
    seeds = {k for k, v in keys.items() if id(v) not in part_of}
    chosen = {k: v for k, v in keys.items() if part_of.get(id(v)) in parts}

    kept_initial: dict[str, list[str]] = {}
    if "predictor" in parts:
        classes = network.config.num_classes
        bias = next(k for k, v in chosen.items() if v is network.predictor.class_embed.bias)
        found = arrays.get(bias)
        if found is not None and found.ndim == 1 and found.shape[0] != classes + 1:
            names = [k for k, v in chosen.items() if id(v) in head]
            kept_initial[_class_count_note(found.shape[0] - 1, classes)] = names
            chosen = {k: v for k, v in chosen.items() if id(v) not in head}
    skipped = {k for names in kept_initial.values() for k in names}

    dropped = [k for k in arrays if k in seeds or k.endswith("seed_generator/state")]
    not_weights = set(dropped)
    weights = [(k, roots.get(k.split("/")[0])) for k in arrays if k not in not_weights]
    in_parts = [k for k, part in weights if part in parts]
    unused = [k for k, part in weights if part is not None and part not in parts]
    stray = [k for k, part in weights if part is None]
    missing = [k for k in chosen if k not in arrays]
    unexpected = [k for k in in_parts if k not in chosen and k not in skipped] + stray
    misshaped = [f"{k} {tuple(arrays[k].shape)} for {tuple(v.shape)}"
                 for k, v in chosen.items()
                 if k in arrays and tuple(arrays[k].shape) != tuple(v.shape)]
    if missing or unexpected or misshaped:
        raise _problems(source, f"{fmt}, parts {', '.join(parts)}",
                        [("missing", missing), ("unexpected", unexpected),
                         ("mis-shaped", misshaped)])
    for key, variable in chosen.items():
        variable.assign(np.asarray(arrays[key]).astype(variable.dtype))
    return InitReport(
        source, fmt, parts, len(chosen),
        dropped={"random seed states (the run's own seed decides)": dropped} if dropped else {},
        kept_initial=kept_initial, not_chosen=_not_chosen(network, parts), unused=len(unused))


def load_converted(network, converted: Converted, parts: list[str], source: str) -> InitReport:
    """Sets the chosen parts of `network` from a checkpoint in the original's names."""
    from maskformer.conversion.detectron2 import weight_map
    from maskformer.model_dir import variable_keys

    state, fmt = converted.state, converted.format
    backbone_type = network.config.backbone.type
    if converted.backbone is not None and converted.backbone != backbone_type:
        raise CheckpointError(f"{source}: a {fmt} checkpoint, but the model's backbone is "
                              f"{backbone_type!r} (model.backbone.type)")
    architecture = network.config.architecture
    heads = [p for p in parts if p != "backbone"]
    if converted.architecture not in (None, architecture) and heads:
        # The backbones are alike; the heads are other modules altogether.
        raise CheckpointError(
            f"{source}: a {fmt} checkpoint, but the model is {architecture!r} "
            f"(model.architecture): its {', '.join(heads)} cannot start from it; set "
            "train.init_checkpoint_modules to backbone")
    present = {_namespace(n) for n in state}
    lacking = [p for p in parts if p not in present]
    if lacking:
        has = [p for p in PARTS if p in present]
        raise CheckpointError(
            f"{source}: the {fmt} checkpoint holds {', '.join(has) or 'no'} weights, not "
            f"{', '.join(lacking)}; set train.init_checkpoint_modules to "
            f"{has[0] if len(has) == 1 else has}")

    part_of = _part_of(network)
    names = {id(v): k for k, v in variable_keys(network).items()}
    targets = [t for t in weight_map(network) if part_of[id(t.variable)] in parts]
    kept_initial: dict[str, list[str]] = {}
    skipped_sources: set[str] = set()
    classes = state.get(_CLASS_HEAD + "bias")
    if ("predictor" in parts and classes is not None
            and classes.shape[0] != network.config.num_classes + 1):
        head = [t for t in targets if t.sources[0].startswith(_CLASS_HEAD)]
        kept_initial[_class_count_note(classes.shape[0] - 1, network.config.num_classes)] = [
            names[id(t.variable)] for t in head]
        skipped_sources |= {s for t in head for s in t.sources}
        targets = [t for t in targets if all(t is not h for h in head)]
    if converted.optional:
        optional = [t for t in targets if any(
            s not in state and re.fullmatch(converted.optional, s) for s in t.sources)]
        if optional:
            kept_initial[converted.optional_reason] = [names[id(t.variable)] for t in optional]
            targets = [t for t in targets if all(t is not o for o in optional)]

    expected = {s for t in targets for s in t.sources}
    missing = sorted(expected - set(state))
    unexpected = [converted.origin.get(n, n) for n in state
                  if (_namespace(n) in parts or _namespace(n) is None)
                  and n not in expected and n not in skipped_sources] + converted.unknown
    unused = [n for n in state if _namespace(n) not in (*parts, None)]
    values, misshaped = [], []
    for t in targets:
        if any(s not in state for s in t.sources):
            continue
        value = np.asarray(t.transform(*(np.asarray(state[s]) for s in t.sources)))
        if tuple(value.shape) != tuple(t.variable.shape):
            misshaped.append(f"{converted.origin.get(t.sources[0], t.sources[0])} "
                             f"{tuple(state[t.sources[0]].shape)} for "
                             f"{names[id(t.variable)]} {tuple(t.variable.shape)}")
        values.append(value)
    if missing or unexpected or misshaped:
        raise _problems(source, f"{fmt}, parts {', '.join(parts)}",
                        [("missing (the original's names)", missing), ("unexpected", unexpected),
                         ("mis-shaped", misshaped)])
    for t, value in zip(targets, values, strict=True):
        t.variable.assign(value.astype(t.variable.dtype))
    return InitReport(source, fmt, parts, len(targets), dropped=converted.dropped,
                      kept_initial=kept_initial, not_chosen=_not_chosen(network, parts),
                      unused=len(unused))


def load_init_checkpoint(network, path: str | Path,
                         modules: str | list[str] = "backbone") -> InitReport:
    """Sets the `modules` parts of a built `network` from the checkpoint at `path`.

    Args:
        network: a built `MaskFormer`.
        path: a model directory, a weights file (`.npz`, `.pkl`, `.pth`, `.bin`,
            `.safetensors`) or a folder holding one.
        modules: "all", "backbone", or a list of "backbone", "pixel_decoder", "predictor"
            (`train.init_checkpoint_modules`).

    Returns:
        What was set and what was left at its initialisation (`InitReport.lines`).

    Raises:
        CheckpointError: an unreadable file, an unknown format, or a part that does not fit
            (one line naming the missing, unexpected and mis-shaped names); nothing is set then.
    """
    from maskformer.conversion.safe_pickle import load_checkpoint

    parts = resolve_parts(modules)
    file = resolve_source(path)
    if file.is_dir() or file.suffix.lower() == ".npz":
        arrays, which = read_model_arrays(file)
        fmt = f"model directory, {which}" if file.is_dir() else "MaskFormer weights"
        return load_model_arrays(network, arrays, parts, str(file), fmt)
    _check_hf_config(file)
    state, metadata = load_checkpoint(file)
    converted = convert_names(state, str(file))
    report = load_converted(network, converted, parts, str(file))
    report.metadata = metadata
    return report
