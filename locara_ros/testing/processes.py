"""Start installed node executables (or any command) as real processes with --ros-args.

A :class:`NodeProcess` writes its output to a log file, waits until the node says it is ready,
stops with SIGINT (then SIGTERM, SIGKILL), and hands its log to the test report on failure.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import yaml

# Every locara_ros node logs a line containing this marker once its models are loaded and its
# topics and services exist (see locara_ros.nodes.common.announce_ready).
READY_MARKER = "locara:ready"


def executable_path(package: str, executable: str) -> str:
    """Path of lib/<package>/<executable> in the first AMENT_PREFIX_PATH prefix that has it."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if not prefix:
            continue
        candidate = Path(prefix) / "lib" / package / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(
        f"executable '{executable}' of package '{package}' not found under AMENT_PREFIX_PATH "
        f"({os.environ.get('AMENT_PREFIX_PATH', '')!r}); build with tools/setup.sh and "
        "source locara_env.sh")


def write_params_file(node_name: str, params: Mapping[str, object], directory: str) -> str:
    """Write a ROS 2 parameters YAML for one node; returns its path."""
    fd, path = tempfile.mkstemp(prefix=f"{node_name.strip('/').replace('/', '_')}_",
                                suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({node_name: {"ros__parameters": dict(params)}}, f)
    return path


def ros_args(*, name: str | None = None, namespace: str | None = None,
             params_files: Iterable[str] = (), params: Mapping[str, object] | None = None,
             remaps: Mapping[str, str] | None = None, log_level: str | None = None) -> list[str]:
    """The --ros-args part of a node command line."""
    args = ["--ros-args"]
    if name:
        args += ["-r", f"__node:={name}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for f in params_files:
        args += ["--params-file", str(f)]
    for key, value in (params or {}).items():
        args += ["-p", f"{key}:={_param_literal(value)}"]
    for src, dst in (remaps or {}).items():
        args += ["-r", f"{src}:={dst}"]
    if log_level:
        args += ["--log-level", log_level]
    return args


def _param_literal(value: object) -> str:
    # -p takes YAML; a flow-style dump keeps strings, numbers, bools and lists exact.
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[:-4].strip() if text.endswith(("\n...", " ...")) else text


class NodeProcess:
    """One node (or any ROS program) as a child process in its own process group."""

    def __init__(self, cmd: Sequence[str], *, label: str, log_dir: str,
                 env: Mapping[str, str] | None = None,
                 ready_pattern: str | None = READY_MARKER) -> None:
        self.cmd = list(cmd)
        self.label = label
        self.log_path = Path(log_dir) / f"{label}.log"
        self.env = dict(os.environ, **(env or {}))
        self.ready_pattern = re.compile(re.escape(ready_pattern)) if ready_pattern else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @classmethod
    def node(cls, executable: str, *, log_dir: str, package: str = "locara_ros",
             name: str | None = None, namespace: str | None = None,
             params: Mapping[str, object] | None = None, params_files: Iterable[str] = (),
             remaps: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
             label: str | None = None, ready_pattern: str | None = READY_MARKER,
             log_level: str | None = None) -> NodeProcess:
        """An installed node executable, started with --ros-args like `ros2 run` would."""
        cmd = [executable_path(package, executable)]
        cmd += ros_args(name=name, namespace=namespace, params_files=params_files, params=params,
                        remaps=remaps, log_level=log_level)
        return cls(cmd, label=label or name or executable, log_dir=log_dir, env=env,
                   ready_pattern=ready_pattern)

    @classmethod
    def from_spec(cls, spec, *, log_dir: str, namespace: str = "",
                  extra_params_files: Iterable[str] = (),
                  params: Mapping[str, object] | None = None,
                  env: Mapping[str, str] | None = None) -> NodeProcess:
        """A node of a topology (locara_ros.core.topology.NodeSpec), started exactly as the
        launch files start it: the topology's config files, then extra files, then its params
        (then `params`, for test-only overrides), and its remaps."""
        from ament_index_python.packages import get_package_share_directory
        config_dir = Path(get_package_share_directory("locara_ros")) / "config"
        files = [str(config_dir / f) for f in spec.params_files] + list(extra_params_files)
        merged = {**dict(spec.params), **dict(params or {})}
        return cls.node(spec.executable, log_dir=log_dir, name=spec.name,
                        namespace=namespace or None, params_files=files, params=merged,
                        remaps=spec.remaps, env=env, label=spec.name)

    @classmethod
    def python(cls, script: str, *args: str, log_dir: str, label: str,
               env: Mapping[str, str] | None = None,
               ready_pattern: str | None = READY_MARKER) -> NodeProcess:
        """A Python script run with this interpreter (test peers, planners)."""
        return cls([sys.executable, script, *args], label=label, log_dir=log_dir, env=env,
                   ready_pattern=ready_pattern)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> NodeProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self._log.write(f"$ {shlex.join(self.cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 60.0) -> NodeProcess:
        """Block until the ready marker is logged; raise with the log if it dies or times out."""
        if self.ready_pattern is None:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_pattern.search(self.output()):
                return self
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with code {self.proc.returncode} before it was ready:\n"
                    f"{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.label} not ready after {timeout:.0f} s:\n{self.output()}")

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """Wait until the log matches a regular expression; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.output())
            if m:
                return m
            time.sleep(0.05)
        raise TimeoutError(f"{self.label}: /{pattern}/ not in the log after {timeout} s:\n"
                           f"{self.output()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (clean rclpy shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        code = self.proc.poll()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group at once (simulates a crash or a pulled cable)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"NodeProcess({self.label}, pid={self.proc.pid if self.proc else None})"


class ProcessGroup:
    """Start several processes, stop them all, and collect their logs."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.procs: list[NodeProcess] = []

    def add(self, proc: NodeProcess) -> NodeProcess:
        self.procs.append(proc)
        return proc

    def start(self, proc: NodeProcess, *, ready_timeout: float = 60.0) -> NodeProcess:
        self.add(proc).start()
        return proc.wait_ready(ready_timeout)

    def stop_all(self) -> dict[str, int | None]:
        return {p.label: p.stop() for p in reversed(self.procs)}

    def logs(self) -> str:
        parts = []
        for p in self.procs:
            parts.append(f"----- {p.label} ({p.log_path}) -----\n{p.output()}")
        return "\n".join(parts)


def start_topology(group: ProcessGroup, specs, *, namespace: str = "",
                   overrides: Mapping[str, Mapping[str, object]] | None = None,
                   ready_timeout: float = 180.0,
                   on_ready=None) -> dict[str, NodeProcess]:
    """Start the nodes of a topology (locara_ros.core.topology.build) in order, each as the launch
    files would start it, waiting for each to be ready. `overrides` maps an executable to extra
    parameters (test-only changes, e.g. a replayed file needs no echo cancelling)."""
    started: dict[str, NodeProcess] = {}
    for spec in specs:
        proc = NodeProcess.from_spec(spec, log_dir=group.log_dir, namespace=namespace,
                                     params=(overrides or {}).get(spec.executable))
        started[spec.name] = group.start(proc, ready_timeout=ready_timeout)
        if on_ready is not None:
            on_ready(spec)
    return started
