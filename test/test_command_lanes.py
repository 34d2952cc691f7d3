"""The command parser's lanes in core (no ROS): the stop lane on partials and finals, speculation,
superseding, busy / timeout answers and cancel-on-stop, with the shipped schema and (where a
generation must be under way) the real SmolLM2."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from locara_ros.core.backends.chat import LlamaCppCommandModel
from locara_ros.core.command_lanes import CommandLanes, LaneConfig, LaneEvent
from locara_ros.core.command_schema import load_schema
from locara_ros.core.parser import CommandParser, ParseOutcome, ParserConfig

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "commands.yaml"
# no sentence template decides these: they wait for the model
MODEL_TEXTS = ("tell me a story about dragons", "what is the capital of france",
               "please describe how rivers form in detail")


class Recorder:
    """A LaneOutput keeping what the node would publish."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commands: list[tuple[str, dict, str]] = []  # (action, arguments, utterance id)
        self.events: list[tuple[LaneEvent, str, str, str]] = []
        self.replies: list[tuple[str, int, str, bool, bool]] = []

    def command(self, outcome: ParseOutcome, utterance_id: str, text: str) -> None:
        with self.lock:
            self.commands.append((outcome.command.action, outcome.command.arguments,
                                  utterance_id))

    def event(self, kind: LaneEvent, utterance_id: str, text: str = "", detail: str = "") -> None:
        with self.lock:
            self.events.append((kind, utterance_id, text, detail))

    def reply(self, utterance_id: str, seq: int, text: str, final: bool,
              cancelled: bool) -> None:
        with self.lock:
            self.replies.append((utterance_id, seq, text, final, cancelled))

    def of(self, kind: LaneEvent) -> list[tuple[LaneEvent, str, str, str]]:
        with self.lock:
            return [e for e in self.events if e[0] is kind]


@pytest.fixture(scope="module")
def schema():
    return load_schema(SCHEMA_PATH)


@pytest.fixture(scope="module")
def model():
    m = LlamaCppCommandModel(n_threads=1)
    yield m
    m.close()


@pytest.fixture
def make(schema):
    made: list[CommandLanes] = []

    def build(model=None, **config) -> tuple[CommandLanes, Recorder]:
        out = Recorder()
        parser = CommandParser(schema, model, ParserConfig(generation_timeout_s=120.0))
        lanes = CommandLanes(parser, out, LaneConfig(**config))
        made.append(lanes)
        return lanes, out
    yield build
    for lanes in made:
        lanes.close()


def generating(lanes: CommandLanes, timeout: float = 30.0) -> None:
    """Wait until the model worker serves a job (a generation is under way)."""
    deadline = time.monotonic() + timeout
    while lanes.worker.current is None:
        assert time.monotonic() < deadline, "the model worker never started the job"
        time.sleep(0.005)


def in_thread(fn, *args, **kw) -> tuple[threading.Thread, list]:
    result: list = []
    t = threading.Thread(target=lambda: result.append(fn(*args, **kw)), daemon=True)
    t.start()
    return t, result


def test_a_stop_in_a_partial_stops_once_and_its_final_adds_nothing(make):
    lanes, out = make()
    lanes.on_partial("stop", "u1")
    assert out.commands == [("stop", {}, "u1")]
    assert [e[:3] for e in out.of(LaneEvent.STOP)] == [(LaneEvent.STOP, "u1", "stop")]
    [(uid, seq, _, final, cancelled)] = out.replies
    assert (uid, seq, final, cancelled) == ("u1", 0, True, False)
    lanes.on_partial("stop", "u1")  # the next partial of the same utterance
    lanes.on_final("stop", "u1")
    assert len(out.commands) == 1 and len(out.of(LaneEvent.STOP)) == 1
    lanes.on_final("stop now", "u2")  # a new utterance stops again
    assert [c[2] for c in out.commands] == ["u1", "u2"]


def test_a_complete_command_in_a_partial_is_prepared_once_and_the_final_publishes_it(make):
    lanes, out = make()
    lanes.on_partial("go to the", "u1")  # not complete yet: nothing prepared
    assert out.events == []
    lanes.on_partial("go to the kitchen", "u1")
    lanes.on_partial("go to the kitchen", "u1")
    assert [e[:3] for e in out.events] == [(LaneEvent.COMMAND_READY, "u1", "go_to")]
    assert out.commands == []  # prepared, not published: the final decides
    lanes.on_final("go to the kitchen", "u1")
    assert out.commands == [("go_to", {"place": "kitchen"}, "u1")]
    # a final that says something else than the partial is decided on its own words
    lanes.on_partial("go to the kitchen", "u2")
    lanes.on_final("go to the garage", "u2")
    assert out.commands[-1] == ("go_to", {"place": "garage"}, "u2")


def test_without_speculation_partials_prepare_nothing(make):
    lanes, out = make(speculate=False)
    lanes.on_partial("go to the kitchen", "u1")
    assert out.events == []
    lanes.on_partial("stop", "u1")  # the stop lane never waits for the final
    assert out.commands == [("stop", {}, "u1")]


def test_requests_answer_empty_busy_and_timeout(make, model):
    lanes, _ = make(model, parse_concurrency=1, request_timeout=120.0)
    assert lanes.request("", "p0", use_history=False, publish=False).message == "empty text"
    first, result = in_thread(lanes.request, MODEL_TEXTS[0], "p1", use_history=False,
                              publish=False)
    generating(lanes)
    busy = lanes.request(MODEL_TEXTS[1], "p2", use_history=False, publish=False)
    assert not busy.success and busy.message.startswith("busy:"), busy.message
    # rules still answer at once while the model is busy
    ruled = lanes.request("turn left 90 degrees", "p3", use_history=False, publish=False)
    assert ruled.success and ruled.action == "turn"
    first.join(120)
    assert result and not result[0].cancelled, result
    lanes.config.request_timeout = 0.05
    late = lanes.request(MODEL_TEXTS[2], "p4", use_history=False, publish=False)
    assert not late.success and late.message.startswith("timeout:"), late.message


def test_a_stop_cancels_the_generation_under_way_and_answers_its_caller(make, model):
    lanes, out = make(model)
    caller, result = in_thread(lanes.request, MODEL_TEXTS[0], "p1", use_history=False,
                               publish=True)
    generating(lanes)
    lanes.on_partial("stop", "u9")
    caller.join(30)
    assert not caller.is_alive(), "the request was not answered after the stop"
    assert result[0].cancelled and not result[0].success
    assert out.commands == [("stop", {}, "u9")]
    assert (LaneEvent.CANCELLED, "p1") in [e[:2] for e in out.events]
    assert ("p1", True, True) in [(r[0], r[3], r[4]) for r in out.replies]


def test_a_newer_spoken_request_supersedes_the_older_one(make, model):
    lanes, out = make(model)
    lanes.on_final(MODEL_TEXTS[0], "u1")
    generating(lanes)
    lanes.on_final("turn right 45 degrees", "u2")  # decided by a rule, at once
    assert ("turn", {"direction": "right", "angle_deg": 45}, "u2") in out.commands
    deadline = time.monotonic() + 30
    while (LaneEvent.CANCELLED, "u1") not in [e[:2] for e in out.events]:
        assert time.monotonic() < deadline, f"u1 not cancelled: {out.events}"
        time.sleep(0.01)
    assert not [c for c in out.commands if c[2] == "u1"]
