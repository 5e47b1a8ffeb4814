"""float16 variants of fixture models, made the way the fp16 files of their layout are published.

- tests/fixtures/models/tiny-fp16/ (encoder.onnx, decoder.onnx, tiny's model.toml renamed) from tiny:
  `convert_float_to_float16` with its defaults (onnxconverter-common's, or ONNX Runtime's copy used here, which also
  fixes the `Cast` nodes of the attention blocks), the usual way fp16 SAM files are made from float32 exports: every
  float tensor of the graph becomes float16, its inputs and outputs included (keep_io_types=False). samserve converts
  at the graph's edge, so such files load as they are. tests/parity.rs compares their masks with the official answers
  of tiny (tests/fixtures/parity.json).
- tests/fixtures/models/sam2-transformers-fp16/ (vision_encoder_fp16.onnx, prompt_encoder_mask_decoder_fp16.onnx,
  each with its weights in `<file>_data`) from sam2-transformers (tools/make_sam2_transformers_fixtures.py), as
  onnx-community/sam2.1-hiera-tiny-ONNX publishes its fp16 pair next to the float32 one. Those come from
  transformers.js's conversion script (scripts/quantize.py, mode fp16, suffix `_fp16`), whose scripts/float16.py is
  onnxconverter-common's converter, modified, called with keep_io_types=True and its DEFAULT_OP_BLOCK_LIST
  (TRANSFORMERS_JS_BLOCK_LIST below: onnxconverter-common's list plus Resize, Cast and RandomNormalLike, Range taken
  out; Resize, Cast, Min, Max, TopK, CumSum, Upsample and RoiAlign stay float32 between Casts) and its clamping of
  float constants to [1e-7, 1e4] in magnitude, then a topological sort. So the graphs' inputs and outputs stay
  float32 (input_labels int64), as transformers.js's Sam2Model feeds float32 pixel_values, points and boxes to
  whichever dtype it loads: samserve sees the edges of the float32 folder, the network inside is float16. The hub's
  fp16 files keep their weights in external `.onnx_data` files (vision_encoder_fp16.onnx is 0.3 MB next to 67 MB of
  vision_encoder_fp16.onnx_data), so these do too (onnx.save's default: tensors of 1 kB and more). Here the conversion
  is ONNX Runtime's copy with those arguments (onnxconverter-common 1.16's own converter never returns with Cast
  blocked: it walks the node list it appends the new Casts to; transformers.js's copy walks a copy of it), followed
  by a stable topological sort (ONNX Runtime's copy appends the Casts of the graph inputs at the end).
  `check_sam2` answers the cases of parity_sam2_transformers.json with them as make_sam2_transformers_fixtures.py's
  verify does (feeds cast to the dtypes the graphs declare, every output finite) and prints the mask IoU with the
  official answers: measured mean 0.9993, lowest 0.998 over the 25 cases' best-scored masks. The folder is 1.5 MB
  against the float32 one's 2.3 MB, not half: the weights halve (1.8 to 0.9 MB), the node list (0.4 MB, mostly the
  int64 Constants of shape arithmetic) does not, and the converter keeps shape inference's value_info (0.17 MB), as
  the published files hold it.

Outputs are deterministic (a re-run writes byte-identical files).

Run after make_fixtures.py and make_sam2_transformers_fixtures.py:  python tools/make_fp16_fixtures.py  (about ten
seconds)
"""

import heapq
import json
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
from pycocotools import mask as coco_mask

from make_layout_fixtures import rgb8
from make_sam2_fixtures import cpu_sessions, iou
from make_sam2_transformers_fixtures import OnnxPredictor

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MODELS = FIXTURES / "models"
SAM2_ENCODER, SAM2_DECODER = "vision_encoder_fp16.onnx", "prompt_encoder_mask_decoder_fp16.onnx"

# transformers.js scripts/float16.py's DEFAULT_OP_BLOCK_LIST (the op types its fp16 conversion keeps in float32).
TRANSFORMERS_JS_BLOCK_LIST = [
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer",
    "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder",
    "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsembleClassifier", "TreeEnsembleRegressor",
    "ZipMap", "NonMaxSuppression", "TopK", "RoiAlign", "Resize", "CumSum", "Min", "Max", "Upsample",
    "RandomNormalLike", "Cast",
]


def read_names(graph):
    """Every name the nodes of `graph` and of its subgraphs read."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                names |= read_names(subgraph)
    return names


def sort_nodes(graph):
    """Topological order, stable: each node as early as the nodes it reads from (its subgraphs' outer names
    included) allow, ties in the given order."""
    nodes = list(graph.node)
    producer = {name: k for k, node in enumerate(nodes) for name in node.output if name}
    waits_on, feeds = [], [[] for _ in nodes]
    for k, node in enumerate(nodes):
        reads = set(node.input)
        for attribute in node.attribute:
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                reads |= read_names(subgraph)
        sources = {producer[name] for name in reads if name in producer} - {k}
        waits_on.append(len(sources))
        for source in sources:
            feeds[source].append(k)
    ready = [k for k, count in enumerate(waits_on) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for consumer in feeds[k]:
            waits_on[consumer] -= 1
            if waits_on[consumer] == 0:
                heapq.heappush(ready, consumer)
    assert len(order) == len(nodes), "the graph has a cycle"
    del graph.node[:]
    graph.node.extend(nodes[k] for k in order)


def ort_defaults(model):
    return convert_float_to_float16(model)


def transformers_js(model):
    """transformers.js's fp16 conversion: float32 edges, its block list and constant range, nodes sorted."""
    model = convert_float_to_float16(model, min_positive_val=1e-7, max_finite_val=1e4, keep_io_types=True,
                                     op_block_list=TRANSFORMERS_JS_BLOCK_LIST)
    sort_nodes(model.graph)
    return model


def dtypes(values):
    return {v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) for v in values}


def convert_folder(source, target, names, convert, external_data):
    """Writes `convert` of each ONNX file `source`/name to `target`/names[name] (the folder emptied first), its
    weights in `<file>_data` if `external_data`."""
    target.mkdir(exist_ok=True)
    for stale in target.iterdir():
        stale.unlink()  # also a stale `_data` file: onnx.save appends to one that exists
    for name, new_name in names.items():
        model = convert(onnx.load(source / name))
        path = target / new_name
        if external_data:
            onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                      location=new_name + "_data")
        else:
            onnx.save(model, path)
        onnx.checker.check_model(path, full_check=True)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in sorted(target.glob(new_name + "*")))
        print(f"{sizes}\n  inputs {dtypes(model.graph.input)}\n  outputs {dtypes(model.graph.output)}")


def megabytes(folder):
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


class Edges:
    """A session fed what its graph declares: feeds cast to its input dtypes, outputs checked finite and returned as
    float32."""

    TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}

    def __init__(self, session):
        self.session = session
        self.types = {i.name: self.TYPES[i.type] for i in session.get_inputs()}

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        outputs = self.session.run(names, {k: np.asarray(v).astype(self.types[k]) for k, v in feeds.items()})
        for name, output in zip(names, outputs):
            assert np.isfinite(output).all(), f"{name}: {np.isnan(output).sum()} NaN, {np.isinf(output).sum()} inf"
        return [output.astype(np.float32) for output in outputs]


class Fp16Predictor(OnnxPredictor):
    """make_sam2_transformers_fixtures.py's caller side with the fp16 files."""

    def __init__(self, folder):
        self.encoder, self.decoder = (Edges(s) for s in cpu_sessions(folder / SAM2_ENCODER, folder / SAM2_DECODER))
        self.side = self.encoder.get_inputs()[0].shape[2]


def check_sam2(folder):
    """The cases of parity_sam2_transformers.json answered with the fp16 files: IoU of the best-scored mask with
    the best-scored official one (as tests/parity.rs measures quantized files), and of every kept mask."""
    predictor, current = Fp16Predictor(folder), None
    best, every, score_difference = [], [], 0.0
    for case in json.loads((FIXTURES / "parity_sam2_transformers.json").read_text())["cases"]:
        if case["image"] != current:
            current = case["image"]
            predictor.set_image(rgb8(FIXTURES / "images" / current))
        logits, scores = (a[0] for a in predictor.predict([case["prompt"]]))
        official = [coco_mask.decode({"size": m["size"], "counts": m["counts"].encode()}) > 0 for m in case["masks"]]
        official_best = official[int(np.argmax([m["score"] for m in case["masks"]]))]
        best.append(iou(logits[int(np.argmax(scores))] > 0, official_best))
        kept = [0, 1, 2] if case["multimask"] else [int(np.argmax(scores))]
        for k, mask, entry in zip(kept, official, case["masks"]):
            every.append(iou(logits[k] > 0, mask))
            score_difference = max(score_difference, abs(float(scores[k]) - entry["score"]))
    print(f"  against parity_sam2_transformers.json, {len(best)} cases: best-scored masks' IoU mean {np.mean(best):.4f},"
          f" lowest {min(best):.4f}; every kept mask ({len(every)}) mean {np.mean(every):.4f}, lowest {min(every):.4f};"
          f" largest score difference {score_difference:.1e}")
    assert np.mean(best) >= 0.99 and min(best) >= 0.97, (np.mean(best), min(best))


def main():
    convert_folder(MODELS / "tiny", MODELS / "tiny-fp16", {"encoder.onnx": "encoder.onnx", "decoder.onnx": "decoder.onnx"},
                   ort_defaults, external_data=False)
    manifest = (MODELS / "tiny" / "model.toml").read_text().replace('name = "tiny"', 'name = "tiny-fp16"')
    (MODELS / "tiny-fp16" / "model.toml").write_text(manifest)
    sam2 = MODELS / "sam2-transformers-fp16"
    convert_folder(MODELS / "sam2-transformers", sam2,
                   {"vision_encoder.onnx": SAM2_ENCODER, "prompt_encoder_mask_decoder.onnx": SAM2_DECODER},
                   transformers_js, external_data=True)
    for fp16, source in ((MODELS / "tiny-fp16", MODELS / "tiny"), (sam2, MODELS / "sam2-transformers")):
        print(f"{fp16.name}: {megabytes(fp16):.2f} MB ({source.name}: {megabytes(source):.2f} MB)")
    check_sam2(sam2)


if __name__ == "__main__":
    main()
