"""Vision core without ROS: frame checks and conversion, the llama.cpp backend on the tiny
random-weight VLM (locara_ros/testing/tiny_vlm.py), and the OpenAI-compatible backend's request."""
from __future__ import annotations

import base64
import http.server
import json
import threading
import time

import cv2
import numpy as np
import pytest

from locara_ros.core.backends.openai_http import BackendError, BackendUnavailable, ServerConfig
from locara_ros.core.backends.vision import (
    LlamaCppVision,
    OpenAIVision,
    make_vision_model,
    mmproj_image_size,
)
from locara_ros.core.models import ModelNotFoundError
from locara_ros.core.vision import (
    CompressedFrame,
    FrameError,
    RawFrame,
    data_uri,
    declared_size,
    fit_size,
    frame_to_rgb,
    resize_to_fit,
)
from locara_ros.testing.camera_publisher import encode, png_declaring, scene
from locara_ros.testing.tiny_vlm import make_tiny_vlm

W, H = 64, 48
SCENE = scene(W, H)
GREY = cv2.cvtColor(cv2.cvtColor(SCENE, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    # One fixed folder per run, so test_vision.py and test_vlm.py share the generated files.
    return make_tiny_vlm(tmp_path_factory.getbasetemp() / "tiny_vlm")


def raw(encoding, rgb=SCENE, **kw):
    data, step = encode(rgb, encoding, pad=kw.pop("pad", 0), bigendian=kw.get("bigendian", False))
    return RawFrame(data, rgb.shape[1], rgb.shape[0], encoding, step, kw.get("bigendian", False))


# ---------------------------------------------------------------------- frames
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_convert_to_the_same_rgb(encoding):
    assert np.array_equal(frame_to_rgb(raw(encoding)), SCENE)
    assert np.array_equal(frame_to_rgb(raw(encoding, pad=7)), SCENE)  # step > width x pixel


@pytest.mark.parametrize("bigendian", [False, True])
def test_grey_encodings_convert_to_grey_rgb(bigendian):
    assert np.array_equal(frame_to_rgb(raw("mono8")), GREY)
    assert np.array_equal(frame_to_rgb(raw("mono16", bigendian=bigendian)), GREY)


def test_mono16_with_a_small_range_is_stretched_not_blackened():
    depth = np.array([[500, 1000], [1500, 2500]], "<u2")  # millimetres
    rgb = frame_to_rgb(RawFrame(depth.tobytes(), 2, 2, "mono16", 4))
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]]  # (v - 500) / 2000 * 255
    flat = RawFrame(np.full((2, 2), 7, "<u2").tobytes(), 2, 2, "mono16", 4)
    assert frame_to_rgb(flat).max() == 0


def test_png_is_lossless_and_jpeg_is_close():
    png, _ = encode(SCENE, "png")
    jpeg, _ = encode(SCENE, "jpeg")
    assert np.array_equal(frame_to_rgb(CompressedFrame(png, "png")), SCENE)
    decoded = frame_to_rgb(CompressedFrame(jpeg, "rgb8; jpeg compressed bgr8"))
    assert decoded.shape == SCENE.shape
    assert np.abs(decoded.astype(int) - SCENE).mean() < 8


@pytest.mark.parametrize("frame, reason", [
    (RawFrame(bytes(W * H * 4), W, H, "32FC1", W * 4), "unsupported encoding '32FC1'"),
    (RawFrame(bytes(W * H * 3 - 1), W, H, "rgb8", W * 3),
     f"data size {W * H * 3 - 1} bytes does not match step x height ({W * 3} x {H} = "),
    (RawFrame(bytes(W * H * 3 + H), W, H, "rgb8", W * 3), "does not match step x height"),
    (RawFrame(bytes(W * H * 2), W, H, "rgb8", W * 2), "step 128 is smaller than width"),
    (RawFrame(b"", 0, 0, "rgb8", 0), "bad image size 0x0"),
    (CompressedFrame(b"", "jpeg"), "empty compressed image"),
    (CompressedFrame(b"GIF89a....", "gif"), "neither JPEG nor PNG"),
    (CompressedFrame(b"\x89PNG\r\n\x1a\n" + bytes(8), "16UC1; compressedDepth png"),
     "compressedDepth images are not supported"),
])
def test_bad_frames_are_refused_by_the_cheap_check_with_the_reason(frame, reason):
    with pytest.raises(FrameError, match=None) as err:
        frame.check()
    assert reason in str(err.value)
    with pytest.raises(FrameError):
        frame_to_rgb(frame)


def test_a_broken_jpeg_body_passes_the_check_and_fails_decoding():
    jpeg, _ = encode(SCENE, "jpeg")
    scan = jpeg.index(b"\xff\xda") + 4  # headers intact (the size is readable), scan zeroed
    broken = CompressedFrame(jpeg[:scan] + bytes(len(jpeg) - scan), "jpeg")
    broken.check()
    with pytest.raises(FrameError, match="cannot decode the JPEG image"):
        frame_to_rgb(broken)


def test_declared_size_is_read_from_the_header_without_decoding():
    for fmt in ("jpeg", "png"):
        data, _ = encode(SCENE, fmt)
        assert declared_size(data) == (SCENE.shape[1], SCENE.shape[0])
    ok, progressive = cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8),
                                   [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert declared_size(progressive.tobytes()) == (50, 30)
    assert declared_size(png_declaring(20000, 20000)) == (20000, 20000)
    assert declared_size(b"\xff\xd8\xff\xe0\x00") is None


def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding():
    bomb = CompressedFrame(png_declaring(20000, 20000), "png")
    assert len(bomb.data) < 2000
    with pytest.raises(FrameError, match="20000x20000 pixels .* over the limit"):
        bomb.check()
    with pytest.raises(FrameError, match="over the limit"):
        frame_to_rgb(bomb)
    with pytest.raises(FrameError, match="over the limit"):
        RawFrame(bytes(W * H * 3), W, H, "rgb8", W * 3, max_pixels=W * H - 1).check()
    RawFrame(bytes(W * H * 3), W, H, "rgb8", W * 3, max_pixels=W * H).check()
    # a header cut short is refused too (nothing says how big it would be)
    with pytest.raises(FrameError, match="does not say the image size"):
        CompressedFrame(b"\x89PNG\r\n\x1a\n" + bytes(4), "png").check()


def test_resize_keeps_aspect_and_never_enlarges():
    assert fit_size(1920, 1080, 384) == (384, 216)
    assert fit_size(480, 640, 320) == (240, 320)
    assert fit_size(64, 48, 384) == (64, 48)
    assert fit_size(64, 48, 0) == (64, 48)
    big = cv2.resize(SCENE, (1280, 960), interpolation=cv2.INTER_NEAREST)
    assert resize_to_fit(big, 320).shape == (240, 320, 3)
    assert resize_to_fit(SCENE, 320) is SCENE


def test_data_uri_round_trips_the_picture():
    uri = data_uri(SCENE, "png")
    assert uri.startswith("data:image/png;base64,")
    png = np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8)
    assert np.array_equal(cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
                          SCENE)
    with pytest.raises(FrameError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        data_uri(np.zeros((4, 4), np.uint8))


# ---------------------------------------------------------------------- llama.cpp backend
@pytest.mark.slow
@pytest.mark.parametrize("family, handler", [("llava15", "llava15"), ("llava15", "moondream"),
                                             ("llava15", "mtmd"), ("qwen25vl", "qwen25vl")])
def test_llama_cpp_backend_runs_image_encoder_projector_and_generation(tmp_path_factory, family,
                                                                        handler):
    text, mmproj, _ = make_tiny_vlm(tmp_path_factory.getbasetemp() / "tiny_vlm", family)
    model = LlamaCppVision(text, mmproj, chat_handler=handler, n_ctx=1024, n_threads=1)
    try:
        assert model.name == f"llama_cpp:{handler}"
        assert model.image_size == mmproj_image_size(mmproj) == 32  # from clip.vision.image_size
        answers = [model.answer(scene(320, 240, variant), "What is on the table?", 12)
                   for variant in range(3)]
        assert all(answers), answers
        # Greedy decoding: the same picture and question give the same answer...
        assert model.answer(scene(320, 240, 0), "What is on the table?", 12) == answers[0]
        # ...and the picture reaches the model: different pictures, different answers.
        assert len(set(answers)) > 1, answers
    finally:
        model.close()


@pytest.mark.slow
def test_llama_cpp_backend_load_errors_name_the_file(tiny_vlm, tmp_path):
    text, mmproj, _ = tiny_vlm
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match=f"mmproj_path.*{missing}.*does not exist"):
        LlamaCppVision(text, missing)
    with pytest.raises(RuntimeError, match=f"cannot load VLM projector '{text}'"):
        LlamaCppVision(text, text, chat_handler="llava15")  # a text model is no projector
    with pytest.raises(RuntimeError, match=f"cannot load VLM '{mmproj}'"):
        LlamaCppVision(mmproj, mmproj, chat_handler="llava15")
    with pytest.raises(ValueError, match="chat_handler must be one of"):
        LlamaCppVision(text, mmproj, chat_handler="gpt4v")


def test_no_configured_model_is_an_error_that_says_how_to_configure_one():
    with pytest.raises(ValueError) as err:
        make_vision_model("llama_cpp")
    text = str(err.value)
    assert "no vision-language model configured" in text
    assert "model_path" in text and "mmproj_path" in text and "backend:=openai" in text
    with pytest.raises(ValueError, match="needs server_url"):
        make_vision_model("openai")
    with pytest.raises(ValueError, match="backend must be"):
        make_vision_model("magic")


# ---------------------------------------------------------------------- OpenAI-compatible backend
class ContractCheckingStandIn(http.server.BaseHTTPRequestHandler):
    """A contract-checking stand-in for an OpenAI-compatible server (not a model): it validates
    each /v1/chat/completions request against the OpenAI chat API's shape, decodes the image
    data URI with OpenCV, and answers with what it found, so the test sees the whole round trip.
    (The real-server test is test_vlm.py::test_remote_backend_against_a_real_openai_compatible_
    server, with llama-cpp-python's server.)"""

    requests: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        problems = check_openai_chat_request(self.path, self.headers, body)
        type(self).requests.append((self.path, body, problems))
        if problems:
            self._send(400, {"error": {"message": "; ".join(problems)}})
            return
        url = body["messages"][-1]["content"][0]["image_url"]["url"]
        jpeg = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
        image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        text = f"stand-in saw a {image.shape[1]}x{image.shape[0]} image"
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}]})

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def check_openai_chat_request(path, headers, body) -> list[str]:
    problems = []
    if path != "/v1/chat/completions":
        problems.append(f"path {path}")
    if headers.get("Content-Type") != "application/json":
        problems.append("content type")
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model must be a non-empty string")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        problems.append("max_tokens must be a positive integer")
    if not isinstance(body.get("temperature", 1.0), (int, float)):
        problems.append("temperature must be a number")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + ["messages must be a non-empty list"]
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant"):
            problems.append(f"bad role {m.get('role')}")
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            problems.append("content must be a string or a list of parts")
            continue
        for part in content:
            if part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    problems.append("text part without text")
            elif part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                if not url.startswith("data:image/jpeg;base64,"):
                    problems.append("image_url.url must be a data URI")
                else:
                    try:
                        base64.b64decode(url.split(",", 1)[1], validate=True)
                    except ValueError:
                        problems.append("image data is not base64")
            else:
                problems.append(f"unknown part type {part.get('type')}")
    return problems


@pytest.fixture
def stand_in():
    ContractCheckingStandIn.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ContractCheckingStandIn)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", ContractCheckingStandIn.requests
    server.shutdown()
    thread.join()
    server.server_close()


def test_openai_backend_sends_a_valid_chat_request_with_the_image(stand_in):
    url, requests = stand_in
    model = OpenAIVision(ServerConfig(url, model="moondream2", api_key="k"), image_size=320,
                         system_prompt="Answer briefly.")
    assert model.name == f"openai:{url}"
    big = cv2.resize(SCENE, (1280, 960), interpolation=cv2.INTER_NEAREST)
    assert model.answer(big, "What is on the table?", 24) == "stand-in saw a 320x240 image"
    [(path, body, problems)] = requests
    assert problems == []
    assert body["model"] == "moondream2" and body["max_tokens"] == 24
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    user = body["messages"][1]
    assert user["role"] == "user"
    assert [p["type"] for p in user["content"]] == ["image_url", "text"]
    assert user["content"][1]["text"] == "What is on the table?"


def test_openai_backend_errors_are_backend_errors(stand_in):
    url, _ = stand_in
    with pytest.raises(BackendError, match="HTTP 400.*path /nope/chat/completions"):
        OpenAIVision(ServerConfig(url.replace("/v1", "/nope"))).answer(SCENE, "q", 4)
    down = OpenAIVision(ServerConfig("http://127.0.0.1:9/v1", timeout=2, connect_timeout=1))
    with pytest.raises(BackendUnavailable):
        down.answer(SCENE, "q", 4)


# ---------------------------------------------------------------------- vision/ask without ROS
def test_vision_service_checks_the_question_and_the_frame_then_answers(tiny_vlm):
    """core.vision_service (what the vlm node serves): refusals with the reason, the answer with
    its frame's stamp from the real llama.cpp backend, a timeout answered as such."""
    from locara_ros.core.vision_service import VisionLimits, VisionService
    text, mmproj, _ = tiny_vlm
    model = LlamaCppVision(text, mmproj, chat_handler="llava15", n_ctx=1024, n_threads=1)
    vision = VisionService(model, VisionLimits(max_question_chars=40, max_frame_age=5.0,
                                               max_tokens=8, request_timeout=60.0),
                           served_by=lambda: model.name)
    try:
        assert vision.ask("what is on the table?").message == "no frame received yet"
        vision.store(RawFrame(b"\0" * 12, 2, 2, "rgb8", 5), 7)  # step < width x pixel size
        assert vision.ask("what is on the table?").message.startswith("bad frame: ")
        assert vision.ask("  ").message == "empty question"
        assert "too long" in vision.ask("why " * 20).message
        vision.store(raw("rgb8"), 1_500_000_000)
        a = vision.ask("what is on the table?")
        assert a.success and a.answer and a.image_stamp_ns == 1_500_000_000, a
        assert a.backend == "llama_cpp:llava15" and a.inference_time > 0
        assert vision.frames_received == 1 and vision.frames_dropped == 1
        time.sleep(0.2)
        stale = vision.ask("what is on the table?", max_age=0.1)
        assert not stale.success and "old (max 0.1 s)" in stale.message
        vision.limits.request_timeout = 0.0
        late = vision.ask("what is on the table?")
        assert not late.success and late.message.startswith("timeout:"), late
    finally:
        vision.close()
        model.close()
