"""Randomising PyTorch modules for parity tests: every parameter and buffer, fixed seed."""

import numpy as np


def randomize_(module, seed: int = 0) -> None:
    """Gives every parameter and buffer a random value that a mapping error cannot hide behind.

    Scales keep activations O(1): weights ~ N(0, 1/fan_in), biases ~ N(0, 0.05), norm scales
    ~ U(0.5, 1.5), running means ~ N(0, 0.2), running variances ~ U(0.5, 1.5).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            shape = tensor.shape
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name or "layernorm" in name or "layer_norm" in name or (
                    tensor.dim() == 1 and leaf in ("weight",)):
                if leaf == "weight":
                    value = torch.rand(shape, generator=gen) + 0.5
                elif leaf == "running_var":
                    value = torch.rand(shape, generator=gen) + 0.5
                elif leaf == "running_mean":
                    value = torch.randn(shape, generator=gen) * 0.2
                else:
                    value = torch.randn(shape, generator=gen) * 0.1
            elif leaf.endswith("bias"):
                value = torch.randn(shape, generator=gen) * 0.05
            elif tensor.dim() >= 2:
                fan_in = int(np.prod(shape[1:]))
                value = torch.randn(shape, generator=gen) / np.sqrt(fan_in)
            else:
                value = torch.randn(shape, generator=gen)
            tensor.copy_(value)
