"""The locara_ros demo: the on-robot topology end to end, printed as it happens.

  bash tools/demo.sh                       # sample conversation + image shipped in samples/
  bash tools/demo.sh --wav my.wav          # your own recording (any rate/channels)
  bash tools/demo.sh --live                # live microphone (PortAudio) and your camera topic

It starts the node executables exactly as locara_ros.core.topology describes the on-robot
topology (the same description the launch files use), plays the role of a camera driver (the
sample image as JPEG on camera/image_raw/compressed) and of a planner (it listens to
voice/command and calls vision/ask), prints partial and final transcripts, commands, replies,
events and per-turn timings, and saves in out/demo/: the robot's speech (robot_speech.wav), the
conversation (conversation.json) and a picture of every turn (timeline.png, one lane per node).

The shipped conversation (samples/conversation.wav, tools/make_samples.py) shows each capability
once: a command, a long answer the user talks over on purpose (a barge-in), a vision question, a
request the robot must refuse, and a stop.

Vision: no vision-language weights are packaged anywhere this project can install from. Give
real ones with --vlm-model/--vlm-mmproj/--vlm-chat-handler and the robot speaks what it sees.
Without them the robot answers a spoken vision question "no vision model is running", and the
demo still exercises vision/ask with the tiny random-weight test model
(locara_ros/testing/tiny_vlm.py,
served under demo/noise_vision/ask so the robot never speaks it): the image really goes through
llama.cpp's image encoder, projector and text generation, and the answer is printed labelled as
noise.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from locara_ros.core import contract as C

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "conversation.wav"
NOISE_VISION = "demo/noise_vision/ask"  # where the random-weight model answers (never spoken)


class Printer:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.lines: list[str] = []

    def __call__(self, tag: str, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.2f}s] {tag:<11} {text}"
        with self.lock:
            self.lines.append(line)
            print(line, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wav", default=str(SAMPLE),
                   help="audio file the microphone replays (default: the shipped conversation)")
    p.add_argument("--image", default=str(ROOT / "samples" / "scene.png"),
                   help="image published as the camera (default: the shipped sample)")
    p.add_argument("--live", action="store_true",
                   help="live microphone and camera: no file replay, no image publishing")
    p.add_argument("--camera-topic", default=C.CAMERA.name)
    p.add_argument("--whisper-model", default="", help="tiny.en (default), base or a path")
    p.add_argument("--llm-model", default="", help="GGUF path (default: packaged SmolLM2-135M)")
    p.add_argument("--vlm-model", default="")
    p.add_argument("--vlm-mmproj", default="")
    p.add_argument("--vlm-chat-handler", default="")
    p.add_argument("--no-vision", action="store_true", help="do not start the vlm node")
    p.add_argument("--out", default=str(ROOT / "out" / "demo"))
    p.add_argument("--timeout", type=float, default=240.0,
                   help="give up after this many seconds (file mode)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from locara_ros.core.topology import TopologyOptions, build
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.processes import ProcessGroup, start_topology

    say = Printer()
    if args.live and not live_devices_ok(say):
        return 2
    lease = None
    if not args.live:  # a private domain so the demo never talks to a real robot by accident
        lease = DomainLease()
        say("setup", f"ROS_DOMAIN_ID={lease.acquire()} (private, localhost only)")

    vlm_model, vlm_mmproj, handler = args.vlm_model, args.vlm_mmproj, args.vlm_chat_handler
    random_vlm = False
    if not args.no_vision and not vlm_model:
        from locara_ros.testing.tiny_vlm import make_tiny_vlm
        vlm_model, vlm_mmproj, handler = (str(x) for x in make_tiny_vlm(out / "tiny_vlm"))
        random_vlm = True
        say("setup", "vision: no VLM weights are packaged, so the robot will say no vision "
                     "model is running; the tiny RANDOM-weight test model answers on "
                     f"{NOISE_VISION} (printed as noise, never spoken; give --vlm-model for "
                     "real weights)")

    if not args.live and Path(args.wav).resolve() == SAMPLE:
        sys.path.insert(0, str(ROOT / "tools"))
        from make_samples import CONVERSATION, TALKED_OVER
        planned_barge_in = f"-{TALKED_OVER:04d}"
        say("sample", f"{SAMPLE.name}: the user will say")
        for i, (text, _, what) in enumerate(CONVERSATION, 1):
            say("sample", f'  {i}. "{text}"  ({what})')

    else:
        planned_barge_in = ""

    options = TopologyOptions(
        topology="on_robot", mic_source="device" if args.live else "file",
        mic_file="" if args.live else str(Path(args.wav).resolve()),
        camera_topic=args.camera_topic, whisper_model=args.whisper_model,
        llm_model=args.llm_model, vlm_model=vlm_model, vlm_mmproj=vlm_mmproj,
        vlm_chat_handler=handler, tts_output="device" if args.live else "topic")
    specs = build(options)
    if random_vlm:  # the parser must not find (and speak) the noise model: serve it elsewhere
        specs = [dataclasses.replace(s, remaps={**s.remaps, C.VISION_ASK.name: NOISE_VISION})
                 if s.name == "vlm" else s for s in specs]

    from locara_ros.testing.inprocess import RosHarness
    ros = RosHarness()
    group = ProcessGroup(str(out / "logs"))
    watcher = DemoWatcher(ros, say, args.camera_topic, None if args.live else args.image,
                          NOISE_VISION if random_vlm else C.VISION_ASK.name,
                          planned_barge_in)
    code = 1
    try:
        # noise: keep it short; nothing serves vision/ask, so the parser need not wait for it
        overrides = ({"vlm": {"max_tokens": 12}, "command_parser": {"vision_wait_s": 0.2}}
                     if random_vlm else {})
        if not args.live:  # a replayed file has no loudspeaker in the loop: nothing to cancel
            overrides["asr"] = {"echo_mode": "off"}
        say("start", ", ".join(s.name for s in specs))
        start_topology(group, specs, overrides=overrides,
                       on_ready=lambda spec: say("ready", f"{spec.name} {dict(spec.params)}"))
        mic = group.procs[-1]
        if args.live:
            say("live", "speak now; Ctrl-C to stop")
            while all(p.alive for p in group.procs):
                time.sleep(0.5)
        else:
            mic.wait_for_output("file source finished", timeout=args.timeout)
            say("mic", "sample finished; waiting for the turns to complete")
            watcher.wait_turns_complete(timeout=min(90.0, args.timeout))
            if random_vlm or vlm_model:
                watcher.ask_vision("What is on the table?", random_vlm)
        code = 0 if watcher.summary(out) else 1
        watcher.timeline(out)
    except KeyboardInterrupt:
        say("stop", "interrupted")
        code = 0 if watcher.summary(out) else 1
    except Exception as e:  # noqa: BLE001 - print what failed, with the node logs
        say("error", f"{type(e).__name__}: {e}")
        print(group.logs(), file=sys.stderr)
    finally:
        group.stop_all()
        ros.shutdown()
        if lease is not None:
            lease.release()
    say("logs", str(out / "logs"))
    return code


def live_devices_ok(say: Printer) -> bool:
    """--live needs a microphone and a loudspeaker (PortAudio's defaults); say which is missing
    before anything starts."""
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio library itself
        say("live", f"PortAudio is not available ({e}): install libportaudio2, or run the demo "
                    "without --live (the shipped conversation) or with --wav FILE")
        return False
    try:
        devices = [d["name"] for d in sd.query_devices()]
    except sd.PortAudioError:
        devices = []
    ok = True
    for kind, what in (("input", "microphone"), ("output", "loudspeaker")):
        try:
            d = sd.query_devices(kind=kind)
            say("live", f"{what}: PortAudio default {kind} device '{d['name']}' "
                        f"({d['default_samplerate']:.0f} Hz)")
        except (sd.PortAudioError, ValueError) as e:
            ok = False
            say("live", f"no {what}: PortAudio has no default {kind} device ({e})")
    if not ok:
        say("live", f"devices PortAudio sees: {', '.join(devices) or 'none'}. Plug one in (or "
                    "choose one with the mic_capture/tts parameter `device`), or run the demo "
                    "without --live (the shipped conversation) or with --wav FILE")
    return ok


class DemoWatcher:
    """The demo's own ROS node: camera driver, planner and console."""

    def __init__(self, ros, say: Printer, camera_topic: str, image_path: str | None,
                 vision_service: str = C.VISION_ASK.name, planned_barge_in: str = "") -> None:
        from sensor_msgs.msg import CompressedImage

        from locara_ros.msg import VoiceEvent
        from locara_ros.nodes.common import SENSOR_QOS
        from locara_ros.srv import AskVision
        from locara_ros.testing.observer import GraphObserver

        self.ros, self.say = ros, say
        self.VoiceEvent, self.AskVision = VoiceEvent, AskVision
        self.graph = GraphObserver(ros, "locara_demo", listener=self.show)
        self.last_partial = ""
        n = self.graph.node
        self.ask_client = n.create_client(AskVision, vision_service)
        self.planned_barge_in = planned_barge_in  # utterance id suffix talked over on purpose
        self.vision_result: dict | None = None
        self.image_msg = None
        if image_path:
            bgr = cv2.imread(image_path, cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"cannot read image {image_path}")
            # JPEG on .../compressed, as camera drivers offer it: a 30 KB sample crosses
            # best-effort DDS reliably, where a 900 KB raw frame is often dropped in fragments.
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            msg = CompressedImage(format="jpeg", data=jpeg.tobytes())
            msg.header.frame_id = "camera"
            self.image_msg = msg
            self.cam_pub = n.create_publisher(CompressedImage, f"{camera_topic}/compressed",
                                              SENSOR_QOS)
            n.create_timer(0.2, self.publish_frame)  # 5 fps is plenty for questions

    def publish_frame(self) -> None:
        self.image_msg.header.stamp = self.graph.node.get_clock().now().to_msg()
        self.cam_pub.publish(self.image_msg)

    # ------------------------------------------------------------------ console
    def show(self, kind: str, msg) -> None:
        if kind == "partial" and msg.text and msg.text != self.last_partial:
            self.last_partial = msg.text
            self.say("partial", f'"{msg.text}"')
        elif kind == "final":
            self.last_partial = ""
            self.say("TRANSCRIPT", f'[{msg.utterance_id}] "{msg.text}" (confidence '
                                   f"{msg.confidence:.2f}, {msg.backend})")
        elif kind == "command":
            self.say("COMMAND", f"{msg.action} {msg.arguments_json} ({msg.origin})")
        elif kind == "reply" and (msg.final or msg.cancelled):
            state = "cancelled" if msg.cancelled else "complete"
            self.say("REPLY", f'"{self.graph.reply_text(msg.utterance_id)}" ({state})')
        elif kind == "event":
            self.show_event(msg)
        elif kind == "metrics":
            def ms(v: float) -> str:
                return "-" if v < 0 else f"{v:.0f} ms"
            self.say("timing", f"[{msg.utterance_id}] after end of speech: transcript "
                               f"{ms(msg.transcript_ms)}, first reply token "
                               f"{ms(msg.first_reply_token_ms)}, command {ms(msg.command_ms)}, "
                               f"first audio {ms(msg.first_audio_ms)}")

    def show_event(self, msg) -> None:
        E = self.VoiceEvent
        names = {E.SPEECH_STARTED: "speech started", E.SPEECH_STOPPED: "speech stopped",
                 E.SPEAKING_STARTED: "robot speaking", E.SPEAKING_STOPPED: "robot done",
                 E.BARGE_IN: "BARGE-IN", E.BACKEND_CHANGED: "backend changed",
                 E.ERROR: "ERROR", E.CANCELLED: "cancelled",
                 E.COMMAND_READY: "command ready (from a partial)", E.STOP: "STOP"}
        detail = msg.text or msg.detail
        text = f"{names.get(msg.type, msg.type)} {msg.source} {msg.utterance_id}"
        if msg.type == E.BARGE_IN and self.planned_barge_in:
            text += (" (deliberate: the sample talks over the robot here)"
                     if msg.utterance_id.endswith(self.planned_barge_in) else
                     " (not planned: this reply ran into the next request)")
        self.say("event", f"{text} {detail!r}" if detail else text)

    # ------------------------------------------------------------------ planner side
    def wait_turns_complete(self, timeout: float) -> None:
        try:
            self.graph.wait_idle(timeout=timeout)
        except TimeoutError:
            self.say("warning", f"not every turn completed within {timeout:.0f} s")

    def ask_vision(self, question: str, random_model: bool) -> None:
        self.say("planner", f'vision/ask "{question}"')
        try:
            reply = self.ros.call(self.ask_client, self.AskVision.Request(question=question),
                                  timeout=120.0)
        except TimeoutError as e:
            self.say("vision", f"no answer: {e}")
            return
        label = " [random-weight test model: noise]" if random_model else ""
        self.vision_result = {"success": bool(reply.success), "answer": reply.answer,
                              "noise": random_model}
        self.say("vision", f"success={reply.success} ({reply.message}) frame "
                           f"{reply.image_stamp.sec}.{reply.image_stamp.nanosec:09d}, "
                           f"{reply.inference_time:.2f} s{label}: {reply.answer[:120]!r}")

    def timeline(self, out: Path) -> None:
        """timeline.json + timeline.png: every turn, one lane per node."""
        from locara_ros import timeline
        g = self.graph
        with g.lock:
            spans, turns = timeline.spans_from_graph(list(g.events), list(g.partials),
                                                     list(g.finals), list(g.commands),
                                                     list(g.metrics))
        timeline.save_json(out / "timeline.json", spans, turns)
        try:
            png = timeline.plot(spans, turns, out / "timeline.png", "locara_ros demo (on_robot)")
        except (ImportError, ValueError) as e:
            self.say("timeline", f"no picture: {e}")
            return
        self.say("saved", f"{png} (one lane per node; dashed: end of speech)")

    def summary(self, out: Path) -> bool:
        g = self.graph
        with g.lock:
            pcm = b"".join(bytes(m.audio.data) for m in g.audio)
            commands = list(g.commands)
            metrics = list(g.metrics)
            reply_ids = sorted({c.utterance_id for c in g.reply_chunks})
            barge_ins = [e.utterance_id for e in g.events
                         if e.type == self.VoiceEvent.BARGE_IN]
        finals = g.spoken_finals()
        rate = g.audio_info.sample_rate if g.audio_info else 22050
        if pcm:
            audio = np.frombuffer(pcm, dtype="<i2")
            sf.write(str(out / "robot_speech.wav"), audio, rate, subtype="PCM_16")
            self.say("saved", f"{out / 'robot_speech.wav'} ({audio.size / rate:.1f} s of robot "
                              "speech)")
        record = {
            "transcripts": [{"utterance_id": f.utterance_id, "text": f.text} for f in finals],
            "commands": [{"utterance_id": c.utterance_id, "action": c.action,
                          "arguments": json.loads(c.arguments_json or "{}")} for c in commands],
            "replies": {uid: g.reply_text(uid) for uid in reply_ids},
            "barge_ins": barge_ins,
            "vision": self.vision_result,
            "metrics": [{"utterance_id": m.utterance_id, "transcript_ms": m.transcript_ms,
                         "first_reply_token_ms": m.first_reply_token_ms,
                         "command_ms": m.command_ms, "first_audio_ms": m.first_audio_ms}
                        for m in metrics],
        }
        (out / "conversation.json").write_text(json.dumps(record, indent=2))
        self.say("summary", f"{len(finals)} transcript(s), {len(commands)} command(s), "
                            f"{len(reply_ids)} repl(y/ies), {len(metrics)} timed turn(s)")
        return bool(finals)


if __name__ == "__main__":
    sys.exit(main())
