"""Helpers of the training tests; the shapes records fixture is in tests/conftest.py."""


def smoke_overrides(records, **extra):
    values = {"data.train_files": records["train"], "data.val_files": records["val"],
              "data.dataset_info": records["info"], "model.num_classes": 5,
              "data.deterministic": "true", "data.seed": 0, **extra}
    return [f"{k}={v}" for k, v in values.items()]
