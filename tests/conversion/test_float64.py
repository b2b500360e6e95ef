"""Float32 exactness of a converted R50 + FPN model against the float64 PyTorch model.

Parity tests compare float32 with float32: both sides can be wrong by the same rounding, and a
layer that loses precision only on large, off-centre groups stays hidden behind Hugging Face's
initialisation (weights of mean zero, identity batch norms). Here every parameter tensor of the
Hugging Face model is redrawn with a scale and an offset of its own, and the batch-norm
statistics are set from the activations they see (plus random offsets), so activations stay
finite through the 50 layers but have means far from zero where the pixel decoder normalises by
groups. Ours may then be no further from `model.double()` than 3x PyTorch float32's own
distance to it, for `pred_logits` and `pred_masks` (max |a - truth| / max |truth|).
"""

import copy
import math
import os

import numpy as np
import pytest

from maskformer.config import ExperimentConfig
from maskformer.conversion.io import convert_checkpoint, max_relative_difference
from tests.conversion.test_huggingface import MEAN, STD, hf_model

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.slow

SIZES = [(480, 640), (800, 1216)]


def redraw_(model, seed: int) -> None:
    """Every floating parameter and buffer redrawn with its own random scale and offset.

    Matrices and kernels: (N(0, 1) + o) * s / sqrt(fan_in), o ~ U(-0.5, 0.5), s ~ logU(1/4, 4):
    a mean o * sqrt(fan_in) standard deviations off zero after a conv of ReLU features. Norm
    scales ~ U(0.5, 2) + noise, biases and norm shifts ~ U(-1, 1) + noise, batch-norm
    statistics ~ U(-1, 1) and U(0.5, 2) (replaced by `calibrate_batch_norms_`).
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand((), generator=gen, dtype=torch.float64).item()

    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            shape, leaf = tensor.shape, name.rsplit(".", 1)[-1]
            scale, offset = math.exp(uniform(math.log(0.25), math.log(4.0))), uniform(-0.5, 0.5)
            noise = torch.randn(shape, generator=gen)
            if tensor.dim() >= 2:
                value = (noise + offset) * scale / math.sqrt(math.prod(shape[1:]))
            elif leaf == "running_var":
                value = torch.rand(shape, generator=gen) * 1.5 + 0.5
            elif leaf == "weight":  # a norm's scale
                value = uniform(0.5, 2.0) + 0.2 * scale * noise
            else:  # biases, norm shifts, running means
                value = 2 * offset + 0.2 * scale * noise
            tensor.copy_(value)


def calibrate_batch_norms_(model, pixel_values, seed: int) -> None:
    """Sets each batch norm's statistics from its input on `pixel_values`, off by random
    per-channel offsets (up to one standard deviation) and variance factors (0.5 to 2), so
    that random weights neither blow activations up nor leave them centred."""
    gen = torch.Generator().manual_seed(seed)

    def set_statistics(module, inputs):
        x = inputs[0]
        mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)) + 1e-3
        shift = (torch.rand(mean.shape, generator=gen, dtype=x.dtype) * 2 - 1) * std
        factor = torch.rand(mean.shape, generator=gen, dtype=x.dtype) * 1.5 + 0.5
        module.running_mean.copy_(mean + shift)
        module.running_var.copy_(std**2 * factor)

    hooks = [m.register_forward_pre_hook(set_statistics) for m in model.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for hook in hooks:
            hook.remove()


def to_pixel_values(images, dtype):
    return torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy()).to(dtype)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(HF float32, HF float64, ours) with the same redrawn weights."""
    reference = hf_model(seed=3)
    redraw_(reference, seed=3)
    calibration = np.random.default_rng(3).uniform(0, 255, (1, 160, 224, 3)).astype(np.float32)
    reference.double()
    calibrate_batch_norms_(reference, to_pixel_values(calibration, torch.float64), seed=3)
    reference.float()  # the float32 weights both sides run with
    truth = copy.deepcopy(reference).double()
    directory = tmp_path_factory.mktemp("float64")
    reference.save_pretrained(directory)
    model, _ = convert_checkpoint("hf", directory / "model.safetensors", ExperimentConfig())
    return reference, truth, model


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_no_further_from_float64_than_pytorch_float32(models, size):
    reference, truth, model = models
    images = np.random.default_rng(size[0]).uniform(0, 255, (1, *size, 3)).astype(np.float32)
    with torch.no_grad():
        exact = truth(pixel_values=to_pixel_values(images, torch.float64))
        exact = {"pred_logits": exact.class_queries_logits.numpy(),
                 "pred_masks": exact.masks_queries_logits.numpy()}
        torch32 = reference(pixel_values=to_pixel_values(images, torch.float32))
        torch32 = {"pred_logits": torch32.class_queries_logits.numpy(),
                   "pred_masks": torch32.masks_queries_logits.numpy()}
    ours = model(images, training=False)
    for key in ("pred_logits", "pred_masks"):
        assert np.isfinite(exact[key]).all() and np.abs(exact[key]).max() > 0
        ours_error = max_relative_difference(np.asarray(ours[key]), exact[key])
        torch_error = max_relative_difference(torch32[key], exact[key])
        print(f"{size} {key}: ours {ours_error:.2e}, PyTorch float32 {torch_error:.2e}")
        assert torch_error > 0, "the float64 truth is no different from float32"
        assert ours_error <= 3 * torch_error, (key, ours_error, torch_error)
