"""The R50 COCO panoptic experiment exported at 640 x 640 (resized to 800 x 800 inside, three
bands of post-processing rows) to SavedModel and ONNX, run in TensorFlow and onnxruntime
(random weights; thresholds at 0 so that the map has segments). Full size: slow."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]


def test_r50_coco_panoptic_exports_at_640(tmp_path):
    import keras
    import onnxruntime
    import tensorflow as tf
    from PIL import Image
    from skimage import data

    from maskformer.data.categories import builtin_categories
    from maskformer.experiments import get_experiment
    from maskformer.export import SegmentationGraph, export_model, fixed_size_function
    from maskformer.inference import Predictor
    from maskformer.modeling.maskformer import build_model

    keras.utils.set_random_seed(0)
    config = get_experiment("maskformer_coco_panoptic_r50")
    config.eval.object_mask_threshold = 0.0
    config.eval.overlap_threshold = 0.0
    model = build_model(config.model)
    categories = builtin_categories("coco_panoptic")
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((640, 640), Image.BILINEAR))
    expected = Predictor(model, config, categories).predict_images([photo])[0]
    assert len(expected.segments) >= 2

    quiet = dict(log=lambda _: None, include_logits=True, image_size=(640, 640), batch_size=1)
    export_model(model, config, categories, tmp_path / "saved", **quiet)
    saved = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"](
        images=tf.constant(photo[None]))
    np.testing.assert_array_equal(saved["panoptic_map"].numpy()[0], expected.panoptic_map)

    export_model(model, config, categories, tmp_path / "model.onnx", format="onnx", **quiet)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {"images": photo[None]}), strict=True))
    # onnxruntime's arithmetic against TensorFlow's on the graph it converted. The full-size
    # random network's mask logits are sums with much cancellation: measured 1.6e-6 (class
    # logits) and 2.9e-4 (mask logits) of the largest value apart, where TensorFlow's own plain
    # graph and its XLA program are 2.5e-4 and 1.5e-3 apart.
    graph = SegmentationGraph(model, config, categories, "panoptic", xla=False, portable=True,
                              include_logits=True, sigmoid_by_exp=True)  # as the ONNX export
    reference = fixed_size_function(graph, 1, (640, 640))(tf.constant(photo[None]))
    for key, tolerance in (("pred_logits", 1e-4), ("pred_masks", 1e-3)):
        want = reference[key].numpy()
        assert np.abs(got[key] - want).max() <= tolerance * np.abs(want).max(), key
    # The random full-size network's queries are alike (8% of the pixels have two queries
    # within 1e-3 of each other), so those differences can move pixels and, through a query's
    # area, the numbering of later segments. The post-processing in ONNX is checked on ONNX's
    # own network outputs instead: TensorFlow's post-processing of them gives its map.
    expected_map = graph.postprocess(
        {k: got[k] for k in ("pred_logits", "pred_masks")}, (800, 800), [[800, 800]],
        [[640, 640]], output_shape=(640, 640), semantic_scores=False)["panoptic"]
    np.testing.assert_array_equal(got["num_segments"], expected_map["num_segments"])
    agree = (got["panoptic_map"] == np.asarray(expected_map["panoptic_seg"])).mean()
    assert agree >= 0.999, agree
    assert len(np.unique(got["panoptic_map"])) >= 3
