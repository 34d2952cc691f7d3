"""Shared fixtures: one private ROS domain per test run, in-process nodes, node processes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = TEST_DIR.parent


def _check_environment() -> str | None:
    try:
        import locara_ros.msg  # noqa: F401  (generated: proves the built package is first)
        import rclpy  # noqa: F401
    except ImportError as e:
        return (f"{e}: the tests that need ROS are skipped. Run `bash tools/test.sh`, or "
                "`bash tools/setup.sh && . locara_env.sh` before pytest, for all of them.")
    return None


# Without ROS (a machine with only the pip dependencies), the tests of locara_ros/core still run;
# test files that need rclpy or the generated messages are not collected, and tests that ask for
# the ROS fixtures are skipped.
_ENV_ERROR = _check_environment()
_ROS_ONLY = ("locara_ros.msg", "locara_ros.srv", "rclpy", "audio_common_msgs", "locara_ros.nodes",
             "std_msgs", "sensor_msgs", "launch_pytest", "locara_ros.testing.inprocess",
             "diagnostic_msgs", "locara_ros.testing.room_node", "locara_ros.testing.feed")


def pytest_ignore_collect(collection_path, config):
    if _ENV_ERROR and collection_path.suffix == ".py" and \
            collection_path.name.startswith("test_"):
        text = collection_path.read_text(errors="replace")
        return any(f"import {m}" in text or f"from {m}" in text for m in _ROS_ONLY) or None
    return None


def pytest_collection_modifyitems(config, items):
    if not _ENV_ERROR:
        return
    skip = pytest.mark.skip(reason=_ENV_ERROR)
    for item in items:
        if {"ros", "procs"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


def pytest_report_header(config):
    import locara_ros
    lines = [f"locara_ros from: {', '.join(locara_ros.__path__)}",
             f"RMW_IMPLEMENTATION={os.environ.get('RMW_IMPLEMENTATION', '(default)')}"]
    if _ENV_ERROR:
        lines.append(f"no ROS: {_ENV_ERROR}")
    return lines


from locara_ros.testing.domain import DomainLease  # noqa: E402
from locara_ros.testing.processes import ProcessGroup  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def ros_domain():
    """This run's own ROS_DOMAIN_ID (file-locked), localhost-only discovery."""
    lease = DomainLease()
    domain_id = lease.acquire()
    sys.stderr.write(f"\n[locara] ROS_DOMAIN_ID={domain_id}, localhost-only discovery\n")
    yield domain_id
    lease.release()


@pytest.fixture
def ros(ros_domain):
    """In-process nodes spun by an executor thread: ros.node(), ros.collect(), ros.call()."""
    from locara_ros.testing.inprocess import RosHarness
    harness = RosHarness()
    yield harness
    harness.shutdown()


@pytest.fixture
def procs(ros_domain, tmp_path, request):
    """Real processes: procs.start(NodeProcess.node("asr", log_dir=procs.log_dir, ...)).

    All are stopped at the end of the test; their logs are attached to a failing test's report.
    """
    group = ProcessGroup(str(tmp_path / "logs"))
    yield group
    group.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write("\n" + group.logs() + "\n")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def support_dir() -> Path:
    return TEST_DIR / "support"
