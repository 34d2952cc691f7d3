"""The model nodes are lifecycle nodes: driven through their states by lifecycle_msgs services.

Uses the tts node (the quickest model node to load: the packaged Piper voice) as a real process;
asr, command_parser and vlm share the same base (locara_ros.nodes.managed.ManagedNode), and the
launch tests check `ros2 lifecycle get` on a launched graph.
"""
from __future__ import annotations

import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from locara_ros.core import contract as C
from locara_ros.msg import VoiceEvent
from locara_ros.nodes.common import EVENTS_QOS, RELIABLE_QOS
from locara_ros.srv import ParseCommand
from locara_ros.testing.inprocess import wait_until
from locara_ros.testing.processes import READY_MARKER, NodeProcess

pytestmark = pytest.mark.slow


class Lifecycle:
    def __init__(self, ros, node_name: str) -> None:
        self.ros = ros
        node = ros.node(f"lifecycle_test_{node_name}")
        self.get = node.create_client(GetState, f"/{node_name}/get_state")
        self.change = node.create_client(ChangeState, f"/{node_name}/change_state")
        for c in (self.get, self.change):
            assert c.wait_for_service(timeout_sec=30), f"{c.srv_name} not offered"

    def state(self) -> int:
        return self.ros.call(self.get, GetState.Request(), timeout=10).current_state.id

    def transition(self, transition_id: int, timeout: float = 120.0) -> bool:
        req = ChangeState.Request(transition=Transition(id=transition_id))
        return self.ros.call(self.change, req, timeout=timeout).success


def _start(procs, **params) -> NodeProcess:
    base = {"play_on_device": False, "autostart": False}
    base.update(params)
    proc = NodeProcess.node("tts", log_dir=procs.log_dir, params=base)
    procs.add(proc).start()
    proc.wait_for_output("waiting in 'unconfigured'", timeout=60)
    return proc


def test_tts_goes_through_its_states_and_serves_only_when_active(ros, procs):
    proc = _start(procs)
    life = Lifecycle(ros, "tts")
    node = ros.node("lifecycle_test_client")
    stop = node.create_client(Trigger, C.STOP_SPEAKING.name)
    say = node.create_publisher(String, C.SAY.name, RELIABLE_QOS)
    events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)

    def spoken(kind: int) -> list:
        return [e for e in events.snapshot() if e.type == kind and e.source == "/tts"]

    assert life.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert life.transition(Transition.TRANSITION_CONFIGURE)
    assert life.state() == State.PRIMARY_STATE_INACTIVE
    assert READY_MARKER not in proc.output(), "ready before activate"
    ros.wait_for_subscribers(say, timeout=30)
    say.publish(String(data="Nobody hears this."))  # inactive: ignored, and it says so
    proc.wait_for_output(r"message on voice/say while inactive: ignored", timeout=10)

    assert life.transition(Transition.TRANSITION_ACTIVATE)
    assert life.state() == State.PRIMARY_STATE_ACTIVE
    proc.wait_for_output(READY_MARKER, timeout=10)
    say.publish(String(data="I am active now, and this sentence is long enough to still be "
                            "playing when the node is deactivated in the middle of it."))
    events.wait_for(1, timeout=30, where=lambda e: e.type == VoiceEvent.SPEAKING_STARTED)

    # deactivate stops the speech under way; voice/stop still answers (a stop always works)
    assert life.transition(Transition.TRANSITION_DEACTIVATE)
    assert life.state() == State.PRIMARY_STATE_INACTIVE
    [stopped] = events.wait_for(1, timeout=10,
                                where=lambda e: e.type == VoiceEvent.SPEAKING_STOPPED)
    assert stopped.detail == "deactivated", stopped
    assert ros.call(stop, Trigger.Request(), timeout=10).success
    # cleanup frees the voice; configure + activate serve again
    assert life.transition(Transition.TRANSITION_CLEANUP)
    assert life.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert life.transition(Transition.TRANSITION_CONFIGURE)
    assert life.transition(Transition.TRANSITION_ACTIVATE)
    ros.wait_for_subscribers(say, timeout=30)
    say.publish(String(data="Back again."))
    wait_until(lambda: len(spoken(VoiceEvent.SPEAKING_STARTED)) >= 2, 30,
               what="speech after configure and activate again")
    assert proc.alive
    assert life.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert life.state() == State.PRIMARY_STATE_FINALIZED


def test_parser_refuses_calls_while_inactive_and_answers_when_active(ros, procs):
    proc = NodeProcess.node("command_parser", log_dir=procs.log_dir,
                            params={"backend": "none", "autostart": False})
    procs.add(proc).start()
    proc.wait_for_output("waiting in 'unconfigured'", timeout=60)
    life = Lifecycle(ros, "command_parser")
    assert life.transition(Transition.TRANSITION_CONFIGURE)
    parse = ros.node("lifecycle_parse_client").create_client(ParseCommand, C.PARSE.name)
    assert parse.wait_for_service(timeout_sec=30)
    request = ParseCommand.Request(text="go to the kitchen")
    refused = ros.call(parse, request, timeout=10)
    assert not refused.success and "inactive" in refused.message, refused
    assert life.transition(Transition.TRANSITION_ACTIVATE)
    answered = ros.call(parse, request, timeout=30)
    assert answered.success and answered.command.action == "go_to", answered
    assert life.transition(Transition.TRANSITION_DEACTIVATE)
    assert not ros.call(parse, request, timeout=10).success


def test_a_failed_load_fails_configure_with_the_file_and_the_reason(ros, procs, tmp_path):
    missing = tmp_path / "no-such-voice.onnx"
    proc = _start(procs, voice=str(missing))
    life = Lifecycle(ros, "tts")
    assert not life.transition(Transition.TRANSITION_CONFIGURE)
    assert life.state() == State.PRIMARY_STATE_UNCONFIGURED  # and it can be tried again
    line = proc.wait_for_output(r"configure failed: .*", timeout=10).group(0)
    assert str(missing) in line, line
    assert proc.alive


def test_autostart_exits_with_the_reason_when_the_load_fails(procs, tmp_path):
    missing = tmp_path / "no-such-voice.onnx"
    proc = NodeProcess.node("tts", log_dir=procs.log_dir,
                            params={"play_on_device": False, "voice": str(missing)})
    procs.add(proc).start()
    assert proc.proc.wait(timeout=60) == 1
    assert "start-up failed" in proc.output()
    assert str(missing) in proc.output()


def test_a_plain_node_survives_a_callback_that_raises(ros):
    """mic_capture and turn_metrics are plain nodes (GuardedNode): a callback that raises is
    logged and the node goes on; unguarded, rclpy's executor would end with the exception."""
    from std_msgs.msg import String

    from locara_ros.nodes.managed import GuardedNode

    class Fragile(GuardedNode):
        def __init__(self, context) -> None:
            super().__init__("fragile_test_node", context=context)
            self.seen: list[str] = []
            self.create_subscription(String, "fragile_test", self.on_msg, RELIABLE_QOS)

        def on_msg(self, msg: String) -> None:
            if msg.data == "boom":
                raise ValueError("boom")
            self.seen.append(msg.data)

    node = ros.add(Fragile(ros.context))
    pub = ros.node("fragile_talker").create_publisher(String, "fragile_test", RELIABLE_QOS)
    ros.wait_for_subscribers(pub)
    pub.publish(String(data="boom"))
    pub.publish(String(data="after"))
    wait_until(lambda: node.seen == ["after"], 10, what="the message after the failure")
    assert node._callback_failures == 1
