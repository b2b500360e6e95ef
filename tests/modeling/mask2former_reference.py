"""Helpers of the tests against the original Mask2Former's recorded outputs."""

import numpy as np


def nhwc(x):
    """The original's NCHW maps in this project's layout."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def close(ours, ref, name, rel=2e-5):
    """max |ours - ref| <= rel * max |ref| (the reference README's float32 tolerance)."""
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    err = float(np.max(np.abs(ours - ref)))
    limit = rel * float(np.max(np.abs(ref)))
    # The parity figures of docs/benchmarks.md (shown with pytest -s).
    print(f"parity {name}: max |ours - ref| / max |ref| = "
          f"{err / max(float(np.max(np.abs(ref))), 1e-30):.2g}")
    assert err <= limit, f"{name}: max |ours - ref| = {err:.3g} > {limit:.3g}"
