"""Decoding outside the server, as the page does in the browser: the embedding of `GET /v1/images/{id}/embedding`
and the decoder file of `GET /v1/models/{name}/decoder.onnx`, run with Python's onnxruntime (the page runs the same
file with onnxruntime-web), give the server's own answer to `POST /v1/images/{id}/segment`.

    SAMSERVE_BIN=target/debug/samserve python tests/python/test_embedding.py

Needs numpy, safetensors and onnxruntime (.ci/run installs them into target/ci-tools). Starts the binary
(SAMSERVE_BIN, target/debug/samserve by default) with the tiny fixture model on a free port.
"""

import base64
import json
import os
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
from safetensors.numpy import load

ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("SAMSERVE_BIN", str(ROOT / "target" / "debug" / "samserve"))
MODEL = ROOT / "tests" / "fixtures" / "models" / "tiny"
IMAGE = ROOT / "tests" / "fixtures" / "images" / "landscape.png"
# A click, and a box with a click (tests/fixtures/parity.json's cases on this image).
PROMPTS = [
    {"points": [[425.25, 169.5]], "labels": [1]},
    {"points": [[425.25, 169.5]], "labels": [1], "box": [251.0, 0.0, 530.5, 242.25]},
]
# What the server answers from its f32 cache, within the float noise of two ONNX Runtime builds and thread counts.
TOLERANCE = 1e-4
# The bounds tests/parity.rs holds --cache-f16 to (the embedding in f16, widened for the decoder): scores within
# 1e-3, every mask's IoU at least 0.97 (f16 rounding moves a boundary pixel here and there).
F16_SCORE = 1e-3
F16_LOWEST_IOU = 0.97


def request(base, path, body=None, headers=None):
    """(status, headers, body bytes) of one request; error statuses are answers too."""
    call = urllib.request.Request(base + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(call, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def start_server(workdir):
    """`samserve serve --port 0` with the tiny model, and its base URL: the first line of its stdout is
    `samserve listening on http://HOST:PORT`."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SAMSERVE_")}
    environment["RUST_LOG"] = "warn"
    command = [BINARY, "--device", "cpu", "serve", "--port", "0", "--data-dir", workdir, "--model", str(MODEL)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
    return process, process.stdout.readline().strip().split(" ")[-1]


def wait_until_ready(base):
    """/readyz answers 200 once the model is loaded."""
    deadline = time.monotonic() + 60
    while request(base, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.05)


def size(text):
    """`[H, W]` from the metadata."""
    height, width = json.loads(text)
    return height, width


def decode(session, tensors, metadata, prompt):
    """The decoder run as SamPredictor prepares a prompt for SamOnnxModel (and the server, docs/api.md): the points,
    then the box corners labelled 2 and 3, scaled by resized / original; without a box, the padding point (0, 0)
    labelled -1; no mask_input. (scores, low-res logits) of the multimask candidates, best first, as the server
    sorts them."""
    (height, width), (resized_height, resized_width) = size(metadata["original_size"]), size(metadata["resized_size"])
    points, labels = list(prompt["points"]), list(prompt["labels"])
    if "box" in prompt:
        x0, y0, x1, y1 = prompt["box"]
        points, labels = points + [[x0, y0], [x1, y1]], labels + [2, 3]
    scale = np.array([resized_width / width, resized_height / height])
    coords = [list(np.array(point) * scale) for point in points]
    if "box" not in prompt:
        coords, labels = coords + [[0, 0]], labels + [-1]
    feeds = {name: tensor.astype(np.float32) for name, tensor in tensors.items()}
    feeds["point_coords"] = np.array([coords], np.float32)
    feeds["point_labels"] = np.array([labels], np.float32)
    feeds["mask_input"] = np.zeros((1, 1, *size(metadata["low_res_size"])), np.float32)
    feeds["has_mask_input"] = np.zeros(1, np.float32)
    feeds["orig_im_size"] = np.array([height, width], np.float32)
    scores, logits = session.run(["iou_predictions", "low_res_masks"], feeds)
    # Token 0 is the single-mask output; 1 to 3 the multimask candidates.
    order = 1 + np.argsort(-scores[0, 1:], kind="stable")
    return scores[0, order], logits[0, order]


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


class DecodingOutsideTheServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        workdir = tempfile.TemporaryDirectory()
        cls.addClassCleanup(workdir.cleanup)
        process, cls.base = start_server(workdir.name)
        cls.addClassCleanup(process.wait)
        cls.addClassCleanup(process.terminate)
        assert cls.base.startswith("http://"), f"unexpected first line {cls.base!r}"
        wait_until_ready(cls.base)
        status, _, body = request(cls.base, "/v1/images", IMAGE.read_bytes(), {"Content-Type": "image/png"})
        assert status == 200, body
        cls.image_id = json.loads(body)["image_id"]
        cls.model = json.loads(request(cls.base, "/v1/models")[2])["models"][0]
        cls.files = {}
        for dtype in ["f32", "f16"]:
            status, headers, body = request(cls.base, f"/v1/images/{cls.image_id}/embedding?dtype={dtype}")
            assert status == 200 and headers["Content-Type"] == "application/octet-stream", (status, body)
            cls.files[dtype] = body

    def tensors(self, dtype):
        return load(self.files[dtype])

    def metadata(self, dtype):
        # The safetensors header: 8 bytes of length, then JSON.
        length = int.from_bytes(self.files[dtype][:8], "little")
        return json.loads(self.files[dtype][8 : 8 + length])["__metadata__"]

    def server_answers(self):
        """(scores, low-res logits) of each prompt's candidates, as the server answers them from its cache."""
        body = {"prompts": PROMPTS, "multimask": True, "output": ["logits"]}
        status, _, answer = request(
            self.base,
            f"/v1/images/{self.image_id}/segment",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        self.assertEqual(status, 200, answer)

        def logits(mask):
            # docs/api.md: h * w little-endian float32 values, row-major.
            return np.frombuffer(base64.b64decode(mask["logits"]["data"]), "<f4").reshape(mask["logits"]["size"])

        return [
            (np.array([m["score"] for m in result["masks"]], np.float32), np.stack([logits(m) for m in result["masks"]]))
            for result in json.loads(answer)["results"]
        ]

    def test_the_files_hold_the_decoders_tensors_with_the_sizes_it_needs(self):
        model = self.model
        self.assertEqual((model["embedding_dtype"], model["browser_decoder"]), ("f32", True))
        shapes = {tensor["name"]: tensor["shape"] for tensor in model["embedding_tensors"]}
        wide, narrow = self.tensors("f32"), self.tensors("f16")
        self.assertEqual({name: list(t.shape) for name, t in wide.items()}, shapes)
        self.assertEqual({name: list(t.shape) for name, t in narrow.items()}, shapes)
        for name in shapes:
            self.assertEqual((wide[name].dtype, narrow[name].dtype), (np.float32, np.float16))
            self.assertTrue(np.array_equal(narrow[name].view(np.uint16), wide[name].astype(np.float16).view(np.uint16)))
        metadata = self.metadata("f32")
        self.assertEqual(metadata, self.metadata("f16"))
        low_res = model["low_res_size"]
        self.assertEqual(
            metadata,
            {
                "model": "tiny",
                "family": "sam",
                "image_id": self.image_id,
                "original_size": "[427, 640]",
                # The longest side to S = 256, the other rounded: 427 * 256 / 640 = 170.8.
                "resized_size": "[171, 256]",
                "input_size": str(model["input_size"]),
                "low_res_size": f"[{low_res[0]}, {low_res[1]}]",
            },
        )

    def decoder_session(self):
        status, headers, onnx = request(self.base, self.model["decoder_url"])
        self.assertEqual(status, 200)
        self.assertEqual(headers["Cache-Control"], "public, max-age=31536000, immutable")
        return onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])

    def test_the_decoder_run_here_on_the_f32_embedding_gives_the_servers_answer(self):
        session = self.decoder_session()
        for prompt, (server_scores, server_logits) in zip(PROMPTS, self.server_answers()):
            scores, logits = decode(session, self.tensors("f32"), self.metadata("f32"), prompt)
            np.testing.assert_allclose(scores, server_scores, rtol=0, atol=TOLERANCE, err_msg=str(prompt))
            np.testing.assert_allclose(logits, server_logits, rtol=0, atol=TOLERANCE, err_msg=str(prompt))
            # Masks are the logits above 0: the same, but where a logit is within the tolerance of 0.
            differ = (logits > 0) != (server_logits > 0)
            self.assertFalse(np.any(differ & (np.abs(server_logits) > TOLERANCE)), prompt)
            self.assertGreater((server_logits[0] > 0).sum(), 50, "an empty best mask would prove little")

    def test_the_decoder_on_the_f16_embedding_stays_within_the_cache_f16_bounds(self):
        session = self.decoder_session()
        for prompt, (server_scores, server_logits) in zip(PROMPTS, self.server_answers()):
            scores, logits = decode(session, self.tensors("f16"), self.metadata("f16"), prompt)
            np.testing.assert_allclose(scores, server_scores, rtol=0, atol=F16_SCORE, err_msg=str(prompt))
            for ours, theirs in zip(logits, server_logits):
                self.assertGreaterEqual(iou(ours > 0, theirs > 0), F16_LOWEST_IOU, prompt)


if __name__ == "__main__":
    unittest.main()
