#!/usr/bin/env python3
"""The hostile run of issue 14 against the live on-robot graph, re-run: every finding, what the
graph does with it now.

    . ./locara_env.sh && python tools/hostile.py [--out out/hostile]

The on-robot topology as real processes (the packaged models, tts on the topic, the vlm with the
tiny random-weight test VLM since no VLM weights are packaged), then, one after the other:
nonsense `set_parameters` on asr, command_parser, vlm and tts; 20 concurrent vision/ask calls;
50 concurrent voice/parse calls that need the model; a spoken stop (a partial transcript) while
20 voice/parse calls are in flight; a 400-byte PNG declaring 20000 x 20000 pixels. Prints a table
(finding -> what happened, handled or not), writes hostile.json, exits 1 when a finding is not
handled or a node died.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NONSENSE = {
    "asr": {"vad_stop_ms": -100.0, "vad_threshold": 5.0, "max_utterance_s": -1.0,
            "queue_size": -5, "echo_mode": "banana"},
    "command_parser": {"temperature": -1.0, "max_tokens": -5, "schema_path": "/etc/passwd"},
    "vlm": {"max_queue": 1000, "max_question_chars": -1},
    "tts": {"barge_in_min_speech": math.inf, "volume": math.nan},
}
MODEL_TEXT = "tell me a story about dragons"  # no template decides it: the model lane


def flood(client, requests: list, timeout: float) -> list:
    """Call all at once; each response, or None when unanswered within `timeout`."""
    from locara_ros.testing.inprocess import wait_until
    wait_until(client.service_is_ready, 30, what=f"service {client.srv_name}")
    time.sleep(1.0)  # the server matches this client's response reader (see RosHarness.call)
    futures = [client.call_async(r) for r in requests]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        time.sleep(0.02)
    return [f.result() if f.done() else None for f in futures]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "out" / "hostile"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import psutil
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, Image

    from locara_ros.core import contract as C
    from locara_ros.core.topology import TopologyOptions, build
    from locara_ros.msg import RobotCommand, Transcript
    from locara_ros.nodes.common import client, publisher, qos_profile
    from locara_ros.srv import AskVision, ParseCommand
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.inprocess import RosHarness
    from locara_ros.testing.camera_publisher import png_declaring
    from locara_ros.testing.processes import ProcessGroup, start_topology
    from locara_ros.testing.tiny_vlm import make_tiny_vlm

    rows: list[dict] = []

    def row(finding: str, handled: bool, what: str) -> None:
        rows.append({"finding": finding, "handled": bool(handled), "what": what})
        print(f"[{'ok' if handled else 'FAIL'}] {finding}: {what}", flush=True)

    lease = DomainLease()
    lease.acquire()
    ros = RosHarness()
    group = ProcessGroup(str(out / "logs"))
    procs: dict = {}
    try:
        model, mmproj, handler = (str(x) for x in make_tiny_vlm(out / "tiny_vlm"))
        specs = [s for s in build(TopologyOptions(
            topology="on_robot", tts_output="topic", vlm_model=model, vlm_mmproj=mmproj,
            vlm_chat_handler=handler)) if s.executable != "mic_capture"]
        print("starting the on-robot graph ...", flush=True)
        procs = start_topology(group, specs, overrides={"asr": {"echo_mode": "off"},
                                                        "vlm": {"max_tokens": 12}})
        node = ros.node("hostile")
        camera = publisher(node, C.CAMERA, Image)
        frame = np.zeros((240, 320, 3), np.uint8)
        good = Image(height=240, width=320, encoding="bgr8", step=960, data=frame.tobytes())
        frames = node.create_timer(0.5, lambda: camera.publish(good))

        # 1. nonsense parameters, one call each (a batch fails as a whole)
        for target, values in NONSENSE.items():
            setter = node.create_client(SetParameters, f"/{target}/set_parameters")
            refused, reasons = 0, []
            for name, value in values.items():
                req = SetParameters.Request(
                    parameters=[Parameter(name, value=value).to_parameter_msg()])
                [res] = ros.call(setter, req, timeout=15).results
                refused += int(not res.successful and bool(res.reason))
                reasons.append(f"{name}={value}: {res.reason or 'set!'}")
            row(f"ros2 param set nonsense on {target} ({', '.join(values)})",
                refused == len(values) and procs[target].alive,
                f"{refused}/{len(values)} refused with a reason, e.g. '{reasons[0]}'")

        # 2. 20 concurrent vision/ask
        ask = client(node, C.VISION_ASK, AskVision)  # the contract's QoS: depth 100 both ways
        time.sleep(2.0)  # a camera frame has arrived
        answers = flood(ask, [AskVision.Request(question="what is on the table?")
                              for _ in range(20)], timeout=90)
        ok = sum(1 for a in answers if a is not None and a.success)
        busy = sum(1 for a in answers if a is not None and not a.success)
        row("20 concurrent vision/ask (about half were never answered)",
            None not in answers, f"{ok} answered, {busy} refused ('"
            f"{next((a.message for a in answers if a is not None and not a.success), '')}'), "
            f"{answers.count(None)} unanswered")

        # 3. 50 concurrent voice/parse that need the model
        parse = client(node, C.PARSE, ParseCommand)
        t0 = time.monotonic()
        results = flood(parse, [ParseCommand.Request(text=MODEL_TEXT, use_history=False,
                                                     publish=False) for _ in range(50)],
                        timeout=120)
        spent = time.monotonic() - t0
        busy = sum(1 for r in results if r is not None and r.message.startswith("busy"))
        row("50 concurrent voice/parse (40 were never answered)", None not in results,
            f"{50 - results.count(None)} answered in {spent:.1f} s ({busy} busy at once), "
            f"{results.count(None)} unanswered")

        # 4. a spoken stop while 20 voice/parse calls wait for the model
        commands = ros.collect(node, RobotCommand, C.COMMAND.name, qos_profile(C.COMMAND.qos))
        partial = publisher(node, C.TRANSCRIPT_PARTIAL, Transcript)
        ros.wait_for_subscribers(partial)
        load = threading.Thread(target=flood, args=(parse, [ParseCommand.Request(
            text=MODEL_TEXT, use_history=False, publish=False) for _ in range(20)], 120))
        load.start()
        time.sleep(1.0)
        sent = time.monotonic()
        partial.publish(Transcript(utterance_id="hostile-stop", text="stop", is_final=False))
        try:
            commands.wait_for(1, timeout=30, where=lambda m: m.action == "stop")
            latency = time.monotonic() - sent
            row("spoken stop with 20 voice/parse calls in flight (was 11.1 s)", latency < 1.0,
                f"stop on voice/command {latency * 1000:.0f} ms after the partial")
        except TimeoutError:
            row("spoken stop with 20 voice/parse calls in flight (was 11.1 s)", False,
                "no stop within 30 s")
        load.join(130)

        # 5. a PNG declaring 20000 x 20000 pixels, the newest frame (the good ones stop)
        frames.cancel()
        time.sleep(1.0)
        vlm = psutil.Process(procs["vlm"].pid)
        before = vlm.memory_info().rss / 2**20
        compressed = publisher(node, C.CAMERA_COMPRESSED, CompressedImage)
        bomb = CompressedImage(format="png", data=png_declaring(20000, 20000))
        for _ in range(5):
            compressed.publish(bomb)
            time.sleep(0.1)
        [reply] = flood(ask, [AskVision.Request(question="what do you see?", max_age=0.3)], 90)
        after = vlm.memory_info().rss / 2**20
        refused = reply is not None and not reply.success and "bad frame" in reply.message
        row(f"a {len(bomb.data)}-byte PNG declaring 20000x20000 (was decoded: +1.5 GB, 'ok')",
            refused and after - before < 50 and procs["vlm"].alive,
            f"vlm RSS {before:.0f} -> {after:.0f} MB; vision/ask: "
            f"{'unanswered' if reply is None else repr(reply.message)[:110]}")

        dead = [name for name, p in procs.items() if not p.alive]
        row("every node still running", not dead, f"dead: {dead}" if dead else
            ", ".join(procs))
    finally:
        group.stop_all()
        ros.shutdown()
        lease.release()

    (out / "hostile.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=1))
    print("\n| finding | now | handled |\n|---|---|---|")
    for r in rows:
        print(f"| {r['finding']} | {r['what']} | {'yes' if r['handled'] else '**no**'} |")
    return 0 if all(r["handled"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
