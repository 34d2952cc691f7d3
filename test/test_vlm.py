"""The vlm node as a real process: camera frames from a second process
(locara_ros/testing/camera_publisher.py), `vision/ask` from this one, answered by a real llama.cpp
vision pipeline.

The model is the tiny random-weight LLaVA-shaped VLM of locara_ros/testing/tiny_vlm.py (no real VLM
weights can be installed here): its answers are meaningless, but every frame really goes through
OpenCV, llama.cpp's image encoder and projector, and text generation. Greedy decoding makes the
answer a deterministic function of the picture, which the encoding test uses: the same picture
sent as rgb8, bgr8, rgba8, bgra8 or PNG must give the same answer.
"""
from __future__ import annotations

import concurrent.futures
import sys
import threading
import time

import psutil
import re
import pytest
from support import servers
from locara_ros.testing import camera_publisher
from locara_ros.testing.tiny_vlm import make_tiny_vlm

from locara_ros.core import contract as C
from locara_ros.msg import VoiceEvent
from locara_ros.nodes.common import EVENTS_QOS
from locara_ros.srv import AskVision
from locara_ros.testing.inprocess import wait_until
from locara_ros.testing.processes import NodeProcess, ProcessGroup

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    # One fixed folder per run, so test_vision.py and test_vlm.py share the generated files.
    return make_tiny_vlm(tmp_path_factory.getbasetemp() / "tiny_vlm")


def vlm_params(tiny_vlm, **extra):
    text, mmproj, handler = tiny_vlm
    params = {"model_path": str(text), "mmproj_path": str(mmproj), "chat_handler": handler,
              "threads": 1, "n_ctx": 4096, "max_tokens": 16}
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def vlm(ros_domain, tiny_vlm, tmp_path_factory):
    """One vlm node for the module (max_queue 2, frames usable for 5 s)."""
    group = ProcessGroup(str(tmp_path_factory.mktemp("vlm_logs")))
    node = group.start(NodeProcess.node("vlm", log_dir=group.log_dir,
                                        params=vlm_params(tiny_vlm, max_frame_age=5.0)))
    yield node
    group.stop_all()


def publish(procs, support_dir, encoding, stamp_sec, *, count=3, period=0.02, hold=False,
            **options):
    """Start a camera_publisher process; returns once all its frames are published. With hold
    it keeps resending the last frame until stopped (best-effort samples sent while the
    subscriber is still matching are lost on a loaded machine)."""
    args = ["--encoding", encoding, "--stamp-sec", str(stamp_sec), "--count", str(count),
            "--period", str(period)]
    options.setdefault("width", WIDTH)
    options.setdefault("height", HEIGHT)
    if hold:
        options["hold"] = True
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    label = f"camera_{encoding}_{stamp_sec}"
    return procs.start(NodeProcess.python(camera_publisher.__file__, *args,
                                          log_dir=procs.log_dir, label=label))


@pytest.fixture
def asker(ros):
    """asker(namespace) -> ask(question, max_age, max_tokens, timeout) for <namespace>/vision/ask.

    Tests that start their own vlm node put it in a namespace, away from the module's node."""
    node = ros.node("vision_asker")

    def make(namespace=""):
        client = node.create_client(AskVision, f"{namespace}/{C.VISION_ASK.name}" if namespace
                                    else C.VISION_ASK.name)

        def call(question="What do you see?", max_age=0.0, max_tokens=0, timeout=60.0):
            return ros.call(client, AskVision.Request(question=question, max_age=max_age,
                                                      max_tokens=max_tokens), timeout=timeout)
        return call
    return make


@pytest.fixture
def ask(asker):
    return asker()


def ask_until_stamp(ask, stamp_sec, timeout=15.0, **kw):
    """Ask until the answer is about the frame stamped stamp_sec (frames arrive asynchronously
    after the publisher has sent them); returns that reply. The frame may be old by the time a
    loaded machine gets to the question: staleness has tests of its own."""
    kw.setdefault("max_age", 120.0)
    replies = []

    def done():
        replies.append(ask(**kw))
        r = replies[-1]
        return r if r.success and r.image_stamp.sec == stamp_sec else None
    try:
        return wait_until(done, timeout, interval=0.1, what=f"an answer about frame {stamp_sec}")
    except TimeoutError:
        last = replies[-1] if replies else None
        raise AssertionError(f"no answer about frame {stamp_sec}; last reply: {last}") from None


def test_every_encoding_is_answered_with_its_frame_stamp(vlm, procs, support_dir, ask):
    # Row padding and big-endian mono16 are covered in test_vision.py; one case each here.
    cases = [("rgb8", {}), ("bgr8", {}), ("rgba8", {}), ("bgra8", {"pad": 4}), ("png", {}),
             ("mono8", {}), ("mono16", {"bigendian": True}), ("jpeg", {})]
    answers = {}
    for i, (encoding, options) in enumerate(cases):
        stamp = 2000 + 10 * i
        pub = publish(procs, support_dir, encoding, stamp, hold=True, **options)
        reply = ask_until_stamp(ask, stamp + 2)  # the last of its 3 frames
        assert reply.message == "ok"
        assert reply.image_stamp.nanosec == 0
        assert reply.backend == "llama_cpp:llava15"
        assert reply.answer.strip(), f"{encoding}: empty answer"
        assert reply.inference_time > 0
        answers[(encoding, tuple(options.items()))] = reply.answer
        pub.stop()
    colour = [answers[("rgb8", ())], answers[("bgr8", ())], answers[("rgba8", ())],
              answers[("bgra8", (("pad", 4),))], answers[("png", ())]]
    grey = [answers[("mono8", ())], answers[("mono16", (("bigendian", True),))]]
    # Same picture, same pixels after conversion -> same greedy answer.
    assert len(set(colour)) == 1, f"colour encodings disagree: {colour}"
    assert len(set(grey)) == 1, f"grey encodings disagree: {grey}"
    # ...and the picture matters: its grey version is answered differently.
    assert colour[0] != grey[0]


def test_busy_requests_beyond_the_queue_limit_are_refused(vlm, procs, support_dir, ask):
    pub = publish(procs, support_dir, "bgr8", 3000, count=1, hold=True)
    ask_until_stamp(ask, 3000)
    pub.stop()
    # Five long questions at once: one is answered, one waits (max_queue 2), three are refused.
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(ask, f"question {i}", 300.0, 150, 120.0) for i in range(5)]
        replies = [f.result() for f in futures]
    busy = [r for r in replies if not r.success]
    answered = [r for r in replies if r.success]
    assert len(answered) == 2, [r.message for r in replies]
    assert [r.message for r in busy] == ["busy: 2 requests queued (max 2)"] * 3
    assert all(r.image_stamp.sec == 3000 and len(r.answer) > 30 for r in answered)
    assert all(r.answer == "" and r.image_stamp.sec == 0 for r in busy)
    # Once the queue has drained, the node answers again.
    assert ask(max_age=300.0).success


def frames_received(vlm) -> int:
    """The node's count of accepted frames, from its latest "answered" log line."""
    counts = re.findall(r"frames received (\d+), dropped", vlm.output())
    assert counts, "no 'answered' line in the vlm log"
    return int(counts[-1])


def test_flood_of_large_frames_keeps_memory_bounded(vlm, procs, support_dir, ask):
    node = psutil.Process(vlm.pid)
    small = publish(procs, support_dir, "bgr8", 4000, count=1)
    ask_until_stamp(ask, 4000)
    small.stop()  # it would keep resending its frame between the flood's
    received_before = frames_received(vlm)
    before = node.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], node.memory_info().rss)
            time.sleep(0.01)
    sampler = threading.Thread(target=sample)
    sampler.start()
    frame_mb = 1920 * 1080 * 3 / 2**20
    big = 0
    reply = None
    try:
        # Bursts of 600 full-HD bgr8 frames (6 MB each) as fast as they can be sent, until the
        # node has taken in at least 40 of them (250 MB). Best-effort DDS drops most of a burst
        # on the way (fragments overflow socket/shared-memory buffers); the rest loads the node.
        # How many get through depends on the machine's load: burst until 40 did (or 4 min).
        # (CI: 12 bursts once got only 29 frames through: up to 24 bursts, 4 min)
        deadline = time.monotonic() + 240
        for burst in range(24):
            if time.monotonic() > deadline:
                break
            first = 5000 + 1000 * burst
            pub = publish(procs, support_dir, "bgr8", first, count=600, period=0.0, width=1920,
                          height=1080)
            flood = range(first, first + 600)
            try:  # a burst may lose every frame on a busy machine: then the next one
                reply = wait_until(
                    lambda flood=flood: (r := ask(max_age=60.0)).image_stamp.sec in flood and r,
                    20, interval=0.2, what="an answer about a full-HD flood frame")
            except TimeoutError:
                pass
            pub.stop()
            big = frames_received(vlm) - received_before
            if big >= 40:
                break
    finally:
        stop.set()
        sampler.join()
    growth_mb = (peak[0] - before) / 2**20
    print(f"vlm took in {big} full-HD frames ({big * frame_mb:.0f} MB); RSS before "
          f"{before / 2**20:.0f} MB, peak growth {growth_mb:.0f} MB")
    assert big >= 40, f"only {big} full-HD frames reached the node; the flood proved nothing"
    # One kept frame (+ one being converted) and the middleware's buffers for samples being
    # reassembled, never the flood: keeping the frames it took in would take big * 6 MB (at
    # least 237 MB). The middleware's part varies with the machine's load: peaks of 85-162 MB
    # were seen in CI (151 MB with 58 frames in, against the 150 MB this test once allowed).
    limit_mb = min(200.0, 0.8 * big * frame_mb)
    assert growth_mb < limit_mb, (f"vlm RSS grew by {growth_mb:.0f} MB taking in {big} frames "
                                  f"(limit {limit_mb:.0f} MB)")
    assert reply is not None, "no answer about any flood frame"
    assert reply.success and reply.message == "ok" and vlm.alive
    # Still serving afterwards: a new small frame replaces the big one.
    publish(procs, support_dir, "rgb8", 30000, count=1, hold=True)
    ask_until_stamp(ask, 30000)


def test_rejects_bad_questions_bad_frames_and_stale_frames(tiny_vlm, procs, support_dir, asker):
    ns = "/fresh"
    vlm = procs.start(NodeProcess.node("vlm", log_dir=procs.log_dir, label="vlm_fresh",
                                       namespace=ns,
                                       params=vlm_params(tiny_vlm, max_question_chars=40)))
    ask = asker(ns)
    reply = ask()
    assert (reply.success, reply.message) == (False, "no frame received yet")
    assert ask("   ").message == "empty question"
    assert ask("x" * 41).message == "question too long (41 chars, max 40)"

    # Camera samples are best effort: send a burst, so that one early sample lost while the
    # endpoints finish discovering each other cannot hide the behaviour under test.
    pub = publish(procs, support_dir, "32FC1", 100, namespace=ns, count=20, period=0.05)
    reply = wait_until(lambda: (r := ask()).message != "no frame received yet" and r, 10,
                       what="the bad frame to arrive")
    assert not reply.success
    assert reply.message.startswith("bad frame: unsupported encoding '32FC1'"), reply.message
    assert reply.answer == "" and reply.image_stamp.sec == 0 and reply.inference_time == 0
    vlm.wait_for_output(r"dropped camera frame .*unsupported encoding '32FC1'")
    pub.stop()

    pub = publish(procs, support_dir, "rgb8", 200, namespace=ns, fault="size", count=20,
                  period=0.05)
    reply = wait_until(lambda: "data size" in (r := ask()).message and r, 10,
                       what="the short frame to be refused")
    assert reply.message.startswith("bad frame: data size"), reply.message
    assert "does not match step x height" in reply.message
    pub.stop()

    pub = publish(procs, support_dir, "rgb8", 300, namespace=ns, count=1, hold=True)
    ask_until_stamp(ask, 300)
    pub.stop()
    time.sleep(0.6)
    reply = ask(max_age=0.3)
    assert not reply.success
    assert reply.message.startswith("latest frame is ") and reply.message.endswith(
        " s old (max 0.3 s)"), reply.message
    age = float(reply.message.split()[3])
    assert age >= 0.5
    assert ask(max_age=30.0).success  # a request's max_age overrides the node's

    # A JPEG whose body is broken passes the cheap header check and fails at decoding.
    pub = publish(procs, support_dir, "jpeg", 400, namespace=ns, count=20, period=0.05,
                  fault="corrupt")
    reply = wait_until(lambda: (r := ask(max_age=30.0)).message.startswith("bad frame") and r,
                       10, what="the corrupt JPEG to be refused")
    assert reply.message.startswith("bad frame: cannot decode the JPEG image"), reply.message
    pub.stop()
    assert vlm.alive


def test_without_a_model_the_node_refuses_to_start_and_says_how_to_configure_one(procs):
    proc = procs.add(NodeProcess.node("vlm", log_dir=procs.log_dir, label="vlm_unconfigured"))
    proc.start()
    proc.proc.wait(60)
    assert proc.proc.returncode == 1
    out = proc.output()
    assert "no vision-language model configured" in out
    assert "model_path" in out and "mmproj_path" in out and "backend:=openai" in out


def test_remote_backend_against_a_real_openai_compatible_server(tiny_vlm, procs, support_dir,
                                                                asker):
    """llama-cpp-python's server (a real OpenAI-compatible server, from PyPI) serving the tiny
    model; the node talks to it through backend=openai."""
    text, mmproj, _ = tiny_vlm
    port = _free_port()
    server = procs.start(NodeProcess(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(text),
         "--clip_model_path", str(mmproj), "--chat_format", "llava-1-5", "--n_ctx", "2048",
         "--n_threads", "2", "--host", "127.0.0.1", "--port", str(port)],
        label="llama_cpp_server", log_dir=procs.log_dir, ready_pattern="Uvicorn running on"),
        ready_timeout=120)
    url = f"http://127.0.0.1:{port}/v1"
    ns = "/remote"
    vlm = procs.start(NodeProcess.node("vlm", log_dir=procs.log_dir, label="vlm_remote",
                                       namespace=ns,
                                       params={"backend": "openai", "server_url": url,
                                               "max_tokens": 8}))
    ask = asker(ns)
    pub = publish(procs, support_dir, "bgr8", 600, count=1, namespace=ns, hold=True)
    reply = ask_until_stamp(ask, 600, timeout=60)
    assert reply.backend == f"openai:{url}" and reply.answer.strip()
    assert "POST /v1/chat/completions HTTP/1.1\" 200" in server.output()

    server.stop()
    reply = ask(max_age=60.0)
    assert not reply.success and reply.message.startswith("backend error: "), reply.message
    assert "Connection" in reply.message or "refused" in reply.message.lower()
    pub.stop()
    assert vlm.alive


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_backend_fails_over_to_the_local_model_and_back(tiny_vlm, ros, procs,
                                                               support_dir, asker):
    """backend=openai with fallback=llama_cpp: when the server dies, questions are answered by
    the local model (the same tiny VLM), BACKEND_CHANGED is announced, and the node returns to
    the server once it is back."""
    text, mmproj, _ = tiny_vlm
    clip = ("--clip_model_path", str(mmproj), "--chat_format", "llava-1-5", "--n_threads", "1")
    server, url = servers.llama_server(procs.log_dir, model=str(text), extra=clip)
    procs.add(server)
    ns = "/failover"
    events = ros.collect(ros.node("vlm_events"), VoiceEvent, f"{ns}/{C.VOICE_EVENTS.name}",
                         EVENTS_QOS)
    procs.start(NodeProcess.node("vlm", log_dir=procs.log_dir, label="vlm_failover",
                                 namespace=ns, params=vlm_params(
                                     tiny_vlm, backend="openai", server_url=url,
                                     fallback="llama_cpp", retry_interval=1.0,
                                     max_frame_age=60.0, max_tokens=8)))
    ask = asker(ns)
    publish(procs, support_dir, "bgr8", 700, count=1, namespace=ns, hold=True)
    first = ask_until_stamp(ask, 700, timeout=60)
    assert first.backend == f"openai:{url}"

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server.kill()
    second = ask(max_age=60.0)
    assert second.success, second.message
    assert second.backend.startswith("llama_cpp") and second.image_stamp.sec == 700
    [switch] = wait_until(lambda: [e for e in events.snapshot()
                                   if e.type == VoiceEvent.BACKEND_CHANGED], 10,
                          what="BACKEND_CHANGED")
    assert "fallback" in switch.detail

    restarted, _ = servers.llama_server(procs.log_dir, port=port, model=str(text), extra=clip,
                                        label="llama_restarted")
    procs.add(restarted)

    def served_by_server():
        reply = ask(max_age=60.0)
        return reply if reply.backend == f"openai:{url}" else None
    assert wait_until(served_by_server, 30, interval=0.5, what="answers from the server").success
