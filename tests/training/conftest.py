import pytest


@pytest.fixture(scope="session")
def shapes_records(tmp_path_factory):
    """A tiny shapes dataset converted to TFRecords: {"train", "val", "info"} paths."""
    from maskformer.data import coco_panoptic, shapes

    root = tmp_path_factory.mktemp("shapes")
    paths = shapes.generate(root, num_train=16, num_val=4, size=64, seed=0, progress=False)
    for split, p in paths.items():
        coco_panoptic.convert(p.images, p.annotations, p.masks, root / "records" / split,
                              strict=True, progress=False)
    return {"train": str(root / "records" / "train-*.tfrecord"),
            "val": str(root / "records" / "val-*.tfrecord"),
            "info": str(root / "records" / "dataset.json")}


def smoke_overrides(records, **extra):
    values = {"data.train_files": records["train"], "data.val_files": records["val"],
              "data.dataset_info": records["info"], "model.num_classes": 5,
              "data.deterministic": "true", "data.seed": 0, **extra}
    return [f"{k}={v}" for k, v in values.items()]
