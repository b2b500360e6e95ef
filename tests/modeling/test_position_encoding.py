import numpy as np

from maskformer.modeling.position_encoding import sine_position_encoding


def test_reference_values():
    """REFERENCE.md section 3: for a 25 x 38 map, channel 0 at (0, 0) is 0.24869, channel 1
    is 0.96858."""
    pos = np.asarray(sine_position_encoding(25, 38, 128))
    assert pos.shape == (25, 38, 256)
    np.testing.assert_allclose(pos[0, 0, 0], 0.24869, atol=1e-5)
    np.testing.assert_allclose(pos[0, 0, 1], 0.96858, atol=1e-5)


def test_matches_formula():
    """Channels [0, F) encode y, [F, 2F) encode x; sin on even, cos on odd channels."""
    h, w, f = 7, 5, 16
    pos = np.asarray(sine_position_encoding(h, w, f), np.float64)
    y = np.arange(1, h + 1) / (h + 1e-6) * 2 * np.pi
    x = np.arange(1, w + 1) / (w + 1e-6) * 2 * np.pi
    dim_t = 10000.0 ** (2 * (np.arange(f) // 2) / f)
    ay, ax = y[:, None] / dim_t, x[:, None] / dim_t
    ey = np.where(np.arange(f) % 2 == 0, np.sin(ay), np.cos(ay))
    ex = np.where(np.arange(f) % 2 == 0, np.sin(ax), np.cos(ax))
    np.testing.assert_allclose(pos[:, :, :f], np.broadcast_to(ey[:, None], (h, w, f)), atol=1e-5)
    np.testing.assert_allclose(pos[:, :, f:], np.broadcast_to(ex[None], (h, w, f)), atol=1e-5)
