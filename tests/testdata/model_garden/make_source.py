"""Builds the tiny source dataset of the Model Garden fixture (run from the repository root)."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from maskformer.data import coco_panoptic, shapes

out = Path(sys.argv[1])
tmp = out.parent / (out.name + ".gen")
shutil.rmtree(tmp, ignore_errors=True)
split = shapes.generate(tmp, num_train=4, num_val=0, size=40, seed=2, progress=False)["train"]
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
shutil.copytree(split.images, out / "images")
shutil.copytree(split.masks, out / "panoptic")
ann = json.loads(split.annotations.read_text())
things = {c["id"] for c in ann["categories"] if c["isthing"]}
# Image 2 (id 2): its second thing segment becomes a crowd region.
ann["annotations"][1]["segments_info"][1]["iscrowd"] = 1
# Image 1: stuff listed before things (COCO's files do not order them).
info = ann["annotations"][0]["segments_info"]
info[:] = [s for s in info if s["category_id"] not in things] + [
    s for s in info if s["category_id"] in things]
# Image 4: a void (unlabelled) block at the bottom left.
png_path = out / "panoptic" / ann["annotations"][3]["file_name"]
rgb = np.array(Image.open(png_path))
rgb[32:, :12] = 0
Image.fromarray(rgb).save(png_path)
ids = coco_panoptic.rgb_to_id(rgb)
for s in ann["annotations"][3]["segments_info"]:
    ys, xs = np.nonzero(ids == s["id"])
    s["area"] = int(len(ys))
    s["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                 int(ys.max() - ys.min() + 1)]
(out / "panoptic.json").write_text(json.dumps(ann, indent=1))
shutil.rmtree(tmp)

# Detection annotations (the converter's --object_annotations_file): the thing segments.
dets = [{"id": s["id"], "image_id": a["image_id"], "category_id": s["category_id"],
         "bbox": s["bbox"], "area": s["area"], "iscrowd": s["iscrowd"], "segmentation": []}
        for a in ann["annotations"] for s in a["segments_info"] if s["category_id"] in things]
(out / "instances.json").write_text(json.dumps(
    {"images": ann["images"], "annotations": dets,
     "categories": [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]}
                    for c in ann["categories"] if c["isthing"]]}, indent=1))
print(json.dumps([[(s["category_id"], s["iscrowd"]) for s in a["segments_info"]]
                  for a in ann["annotations"]]))
