"""`maskformer export`: each format run in its own runtime against `predict` on real photographs.

- SavedModel: loaded in a fresh Python process that has TensorFlow and not this package; its
  maps are identical to `Predictor`'s, for uint8 batches of any size, for encoded files and at
  a fixed size.
- LiteRT (`ai-edge-litert`'s interpreter, no Flex delegate) and ONNX (`onnxruntime`) at a fixed
  size: float32 logits within 1e-4 of the Keras model's, maps agreeing on >= 99.9% of pixels.

The models are tiny and random, with the panoptic thresholds lowered so that random queries
make segments (a map that is all void would agree with anything).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.backend_independent  # TensorFlow graphs; export needs that backend

skimage_data = pytest.importorskip("skimage.data")


def _photos() -> list[np.ndarray]:
    """Photographs shipped with scikit-image, at odd sizes (crops), uint8 RGB."""
    return [skimage_data.astronaut()[37:134, 51:212],  # 97 x 161
            skimage_data.coffee()[:75, 200:301],  # 75 x 101
            skimage_data.chelsea()[40:101, 100:233]]  # 61 x 133


@pytest.fixture(scope="module", params=["maskformer_smoke", "mask2former_smoke"])
def tiny(tmp_path_factory, request):
    """A random smoke model directory (MaskFormer, Mask2Former) with 7 named classes (things
    and stuff)."""
    import keras

    from maskformer.experiments import get_experiment
    from maskformer.model_dir import save_model
    from maskformer.modeling.maskformer import build_model

    mask2former = request.param.startswith("mask2former")
    keras.utils.set_random_seed(4 if mask2former else 3)
    config = get_experiment(request.param)
    # Mask2Former leaves a winning query's pixels void below sigmoid 0.5: keep every query.
    config.eval.object_mask_threshold = 0.0 if mask2former else 0.05
    config.eval.overlap_threshold = 0.0 if mask2former else 0.3
    config.eval.instance = True
    config.eval.instance_top_k = 5
    model = build_model(config.model)
    model(np.zeros((1, 64, 64, 3), np.float32))
    categories = [{"id": 10 + i, "name": f"class {i}", "isthing": int(i < 4),
                   "color": [30 * i, 200 - 20 * i, 90]} for i in range(7)]
    directory = tmp_path_factory.mktemp("tiny") / "model"
    save_model(model, config, directory, categories=categories)
    return directory, model, config, categories


def _predictor(tiny):
    from maskformer.inference import Predictor

    _, model, config, categories = tiny
    return Predictor(model, config, categories)


def _run_cli(*args):
    from maskformer.cli import main

    assert main(list(map(str, args))) == 0


def _png(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# A fresh interpreter that cannot import this package: the SavedModel must carry everything.
_SAVED_MODEL_RUNNER = textwrap.dedent("""
    import sys
    sys.modules["maskformer"] = None  # any import of the package fails
    import json, numpy as np, tensorflow as tf
    model_path, inputs, out = sys.argv[1:4]
    loaded = tf.saved_model.load(model_path)
    data = np.load(inputs, allow_pickle=False)
    results = {}
    for i in range(int(data["count"])):
        images = tf.constant(data[f"images_{i}"])
        for k, v in loaded.signatures["serving_default"](images=images).items():
            results[f"{k}_{i}"] = v.numpy()
    png = [data[f"png_{j}"].tobytes() for j in range(int(data["png_count"]))]
    for k, v in loaded.signatures["serving_bytes"](image_bytes=tf.constant(png)).items():
        results[f"bytes_{k}"] = v.numpy()
    names = loaded.signatures["categories"]()["names"].numpy()
    asset = json.load(open(loaded.categories_file.asset_path.numpy().decode()))
    np.savez(out, names=np.array([n.decode() for n in names]),
             asset_names=np.array([c["name"] for c in asset]), **results)
""")


def _agree(got, want, share=0.999):
    assert got.shape == want.shape
    assert (got == want).mean() >= share, f"{(got == want).mean():.5f} of the pixels agree"


def test_saved_model_runs_without_the_package_and_equals_predict(tiny, tmp_path):
    """Any input size, uint8 batches and encoded files: `predict`'s maps and segments exactly
    (the XLA program is `predict`'s own, traced for any size)."""
    directory, _, _, categories = tiny
    out = tmp_path / "saved"
    _run_cli("export", "--model-dir", directory, "--format", "saved_model", "--out", out)
    assert (out / "saved_model.pb").is_file()

    photos = _photos()
    arrays = {"count": len(photos), "png_count": 2}
    for i, photo in enumerate(photos):
        arrays[f"images_{i}"] = np.stack([photo, photo[:, ::-1]])  # a batch of 2, one size
    for j, photo in enumerate(photos[:2]):
        arrays[f"png_{j}"] = np.frombuffer(_png(photo), np.uint8)
    np.savez(tmp_path / "inputs.npz", **arrays)
    script = tmp_path / "run_saved_model.py"
    script.write_text(_SAVED_MODEL_RUNNER)
    subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "inputs.npz"),
                    str(tmp_path / "results.npz")], check=True, timeout=600)
    got = np.load(tmp_path / "results.npz")

    assert list(got["names"]) == [c["name"] for c in categories]
    assert list(got["asset_names"]) == [c["name"] for c in categories]
    predictor = _predictor(tiny)
    segments = 0
    for i, photo in enumerate(photos):
        expected = predictor.predict_images([photo, photo[:, ::-1]])
        np.testing.assert_array_equal(got[f"image_size_{i}"], [photo.shape[:2]] * 2)
        for b, prediction in enumerate(expected):
            np.testing.assert_array_equal(got[f"panoptic_map_{i}"][b], prediction.panoptic_map)
            count = int(got[f"num_segments_{i}"][b])
            assert count == len(prediction.segments)
            assert [int(c) for c in got[f"segment_category_{i}"][b][:count]] == [
                s["category_id"] for s in prediction.segments]
            assert [bool(t) for t in got[f"segment_isthing_{i}"][b][:count]] == [
                s["isthing"] for s in prediction.segments]
            assert (got[f"segment_score_{i}"][b][:count] > 0.05).all()
            segments += count
    assert segments >= 6

    # encoded files of different sizes: one canvas, each image where image_size says
    expected = predictor.predict_images(photos[:2])
    for b, prediction in enumerate(expected):
        height, width = got["bytes_image_size"][b]
        assert (height, width) == photos[b].shape[:2]
        np.testing.assert_array_equal(got["bytes_panoptic_map"][b][:height, :width],
                                      prediction.panoptic_map)
        assert not got["bytes_panoptic_map"][b][height:].any()


def test_fixed_size_saved_models_are_identical_to_predict(tiny, tmp_path):
    """With --image-size (static shapes before and after the network): panoptic (with the
    semantic map), semantic and instance results identical to `predict`'s. The panoptic
    inference differs between the architectures; the semantic and instance ones are shared,
    so each is exported for one of them (each export takes about 40 s)."""
    import tensorflow as tf

    from maskformer.export import export

    predictor = _predictor(tiny)
    photo = _photos()[1]  # 3 segments
    expected = predictor.predict_images([photo])[0]
    mask2former = tiny[2].model.architecture == "mask2former"
    for task in ("panoptic", "instance" if mask2former else "semantic"):
        export(tiny[0], tmp_path / task, task=task, image_size=photo.shape[:2], batch_size=1,
               include_semantic=task == "panoptic", log=lambda _: None)
        outputs = tf.saved_model.load(str(tmp_path / task)).signatures["serving_default"](
            images=tf.constant(photo[None]))
        if task == "panoptic":
            np.testing.assert_array_equal(outputs["panoptic_map"].numpy()[0],
                                          expected.panoptic_map)
            assert int(outputs["num_segments"][0]) == len(expected.segments) >= 2
            np.testing.assert_array_equal(outputs["semantic_map"].numpy()[0],
                                          expected.semantic_map)
        elif task == "semantic":
            np.testing.assert_array_equal(outputs["semantic_map"].numpy()[0],
                                          expected.semantic_map)
        else:
            valid = outputs["instance_valid"].numpy()[0]
            np.testing.assert_array_equal(outputs["instance_masks"].numpy()[0][valid],
                                          expected.instances["masks"])
            np.testing.assert_array_equal(outputs["instance_classes"].numpy()[0][valid],
                                          expected.instances["labels"])
            np.testing.assert_allclose(outputs["instance_scores"].numpy()[0][valid],
                                       expected.instances["scores"], rtol=1e-6)
            assert valid.sum() >= 1


def _keras_logits(model, config, photo):
    from maskformer.inference import pad_batch, resize_for_inference

    batch, _ = pad_batch([resize_for_inference(photo, config.data)], config.data)
    out = model(batch, training=False)
    return {k: np.asarray(out[k]) for k in ("pred_logits", "pred_masks")}


def _check_runtime(outputs, tiny, photo, task="panoptic"):
    """float32 logits within 1e-4 (relative to the largest) of the Keras model's; maps agree
    with predict's on >= 99.9% of pixels."""
    _, model, config, _ = tiny
    reference = _keras_logits(model, config, photo)
    for key, want in reference.items():
        got = np.asarray(outputs[key])[0]
        assert np.abs(got - want[0]).max() <= 1e-4 * np.abs(want).max(), key
    expected = _predictor(tiny).predict_images([photo])[0]
    key, want = (("panoptic_map", expected.panoptic_map) if task == "panoptic"
                 else ("semantic_map", expected.semantic_map))
    _agree(np.asarray(outputs[key])[0], want)
    assert task != "panoptic" or len(np.unique(want)) > 2  # segments to tell apart


def test_litert_runs_in_the_litert_interpreter(tiny, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from maskformer.export import export, litert_metadata

    photo = _photos()[1]  # 3 segments; shrunk to the model's size (the portable resize)
    path = tmp_path / "model.tflite"
    result = export(tiny[0], path, format="litert", image_size=photo.shape[:2],
                    include_logits=True, log=lambda _: None)
    assert result.flex_ops == []
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    _check_runtime(runner(images=photo[None]), tiny, photo)
    names = [c["name"] for c in tiny[3]]
    assert [c["name"] for c in json.loads(litert_metadata(path))] == names
    categories = json.loads(path.with_suffix(".categories.json").read_text())
    assert [c["name"] for c in categories] == names

    sizes = {}
    for quantize in ("float16", "int8"):
        quantized = tmp_path / f"model_{quantize}.tflite"
        _run_cli("export", "--model-dir", tiny[0], "--format", "litert", "--out", quantized,
                 "--image-size", *photo.shape[:2], "--quantize", quantize, "--task", "semantic")
        outputs = Interpreter(model_path=str(quantized)).get_signature_runner()(
            images=photo[None])
        assert outputs["semantic_map"].shape == (1, *photo.shape[:2])
        sizes[quantize] = quantized.stat().st_size
    assert sizes["int8"] < sizes["float16"] < result.size_bytes


def test_onnx_runs_in_onnxruntime(tiny, tmp_path):
    import onnx
    import onnxruntime

    from maskformer.export import ONNX_OPSET, export

    photo = _photos()[1]
    path = tmp_path / "model.onnx"
    export(tiny[0], path, format="onnx", image_size=photo.shape[:2], include_logits=True,
           log=lambda _: None)
    proto = onnx.load(str(path))
    assert any(o.version == ONNX_OPSET for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    names = json.loads({p.key: p.value for p in proto.metadata_props}["categories"])
    assert [c["name"] for c in names] == [c["name"] for c in tiny[3]]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"images": photo[None]}), strict=True))
    _check_runtime(outputs, tiny, photo)

    # the network alone ("logits": no post-processing), for callers with their own
    raw = tmp_path / "raw.onnx"
    _run_cli("export", "--model-dir", tiny[0], "--format", "onnx", "--task", "logits",
             "--image-size", *photo.shape[:2], "--out", raw)
    session = onnxruntime.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    assert sorted(o.name for o in session.get_outputs()) == [
        "image_size", "pred_logits", "pred_masks"]
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {"images": photo[None]}), strict=True))
    for key, want in _keras_logits(tiny[1], tiny[2], photo).items():
        assert np.abs(got[key] - want).max() <= 1e-4 * np.abs(want).max(), key


def test_bad_requests_are_one_line_errors(tiny, tmp_path, capsys):
    from maskformer.cli import main

    cases = [
        (["--format", "litert", "--out", tmp_path / "a.tflite"], "fixed input size"),
        (["--format", "onnx", "--out", tmp_path / "a.onnx"], "fixed input size"),
        (["--quantize", "int8", "--out", tmp_path / "s"], "quantisation is for LiteRT"),
        (["--format", "litert", "--image-size", "0", "5", "--out", tmp_path / "b.tflite"],
         "two positive integers"),
    ]
    for args, message in cases:
        assert main(["export", "--model-dir", str(tiny[0]), *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(["export", "--model-dir", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "config.yaml" in capsys.readouterr().err
