"""A float16 variant of the tiny fixture model, as fp16 ONNX files are commonly published.

`convert_float_to_float16` with its defaults (onnxconverter-common's, or ONNX Runtime's copy used here, which also
fixes the `Cast` nodes of the attention blocks) is the usual way fp16 SAM files are made from float32 exports: every
float tensor of the graph becomes float16, its inputs and outputs included (keep_io_types=False). samserve converts at the graph's edge, so such files load as
they are; they answer close to the float32 model, not exactly. The files go to tests/fixtures/models/tiny-fp16/
with tiny's model.toml (renamed); tests/parity.rs compares their masks with the official answers of tiny
(tests/fixtures/parity.json).

Run after make_fixtures.py:  python tools/make_fp16_fixtures.py  (a few seconds)
"""

from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

MODELS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"
SOURCE, TARGET = MODELS / "tiny", MODELS / "tiny-fp16"


def main():
    TARGET.mkdir(exist_ok=True)
    for name in ("encoder.onnx", "decoder.onnx"):
        model = convert_float_to_float16(onnx.load(SOURCE / name))
        onnx.save(model, TARGET / name)
        inputs = {i.name: onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type) for i in model.graph.input}
        print(f"{name}: {(TARGET / name).stat().st_size / 1e6:.2f} MB, inputs {inputs}")
    manifest = (SOURCE / "model.toml").read_text().replace('name = "tiny"', 'name = "tiny-fp16"')
    (TARGET / "model.toml").write_text(manifest)


if __name__ == "__main__":
    main()
