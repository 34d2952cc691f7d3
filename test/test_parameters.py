"""Parameters refuse nonsense: at start-up the node stops and names the parameter; at run time
`set_parameters` answers unsuccessful with a reason and the node keeps running (real nodes,
their real parameter services)."""
from __future__ import annotations

import math

import pytest

from locara_ros.testing.processes import NodeProcess


def _set(ros, target: str, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    node = ros.node(f"param_setter_{target}")
    client = node.create_client(SetParameters, f"/{target}/set_parameters")
    results = []
    for k, v in values.items():  # one call each: a batch fails as a whole
        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()])
        [res] = ros.call(client, req, timeout=15).results
        results.append((k, v, res))
    return results


def test_tts_refuses_nonsense_at_run_time_and_keeps_running(ros, procs):
    tts = procs.start(NodeProcess.node("tts", log_dir=procs.log_dir,
                                       params={"play_on_device": False}))
    for name, value, res in _set(ros, "tts", volume=math.nan, barge_in_min_speech=math.inf,
                                 barge_in=3.0, chunk_ms=5.0, max_volume=0.5):
        assert not res.successful and res.reason, (name, value)
    [(_, _, nan)] = _set(ros, "tts", barge_in_min_speech=math.nan)
    assert not nan.successful and "barge_in_min_speech" in nan.reason
    [(_, _, word)] = _set(ros, "tts", barge_in_min_speech="banana")
    assert not word.successful
    [(_, _, ok)] = _set(ros, "tts", barge_in_min_speech=0.3)
    assert ok.successful, ok.reason
    assert tts.alive


def test_start_up_parameters_cannot_be_changed_at_run_time(ros, procs):
    asr = procs.start(NodeProcess.node("asr", log_dir=procs.log_dir))
    for name, value, res in _set(ros, "asr", vad_stop_ms=-100.0, vad_threshold=5.0,
                                 max_utterance_s=-1.0, queue_size=-5, echo_mode="banana"):
        assert not res.successful and res.reason, (name, value)
    assert asr.alive


@pytest.mark.parametrize("node,params,named", [
    ("asr", {"vad_threshold": 5.0}, "vad_threshold"),
    ("asr", {"echo_mode": "banana"}, "echo_mode"),
    ("asr", {"queue_size": -5}, "queue_size"),
    ("tts", {"barge_in_min_speech": ".inf", "play_on_device": False}, "barge_in_min_speech"),
    ("vlm", {"max_queue": 1000}, "max_queue"),
    ("command_parser", {"temperature": -1.0}, "temperature"),
    ("command_parser", {"max_tokens": -5}, "max_tokens"),
    ("command_parser", {"stop_sounds_like": 0.9}, "stop_sounds_like"),
])
def test_nonsense_at_start_up_stops_the_node_with_the_reason(procs, node, params, named):
    proc = NodeProcess.node(node, log_dir=procs.log_dir, label=f"{node}_bad_{named}",
                            params=params)
    with pytest.raises(RuntimeError, match=named):
        procs.start(proc, ready_timeout=60)
    assert proc.proc.returncode == 1


def test_shared_names_are_declared_and_old_names_still_work(ros, procs):
    """Every parameter of the naming table (locara_ros.core.naming) is declared by the nodes it
    lists; a renamed one given under its old name is used, with a warning naming the new one."""
    from rcl_interfaces.srv import GetParameters, ListParameters

    from locara_ros.core import naming
    asr = procs.start(NodeProcess.node("asr", log_dir=procs.log_dir, params={"device": "auto"}))
    asr.wait_for_output(r"parameter device was renamed compute_device: using device='auto'")
    node = ros.node("param_names_client")
    listed = ros.call(node.create_client(ListParameters, "/asr/list_parameters"),
                      ListParameters.Request(), timeout=15).result.names
    assert set(naming.names_of("asr")) <= set(listed), set(naming.names_of("asr")) - set(listed)
    got = ros.call(node.create_client(GetParameters, "/asr/get_parameters"),
                   GetParameters.Request(names=["compute_device", "device"]), timeout=15)
    assert [v.string_value for v in got.values] == ["auto", "auto"]
    tts = procs.start(NodeProcess.node("tts", log_dir=procs.log_dir,
                                       params={"play_on_device": False}))
    listed = ros.call(node.create_client(ListParameters, "/tts/list_parameters"),
                      ListParameters.Request(), timeout=15).result.names
    assert set(naming.names_of("tts")) <= set(listed), set(naming.names_of("tts")) - set(listed)
    assert asr.alive and tts.alive

