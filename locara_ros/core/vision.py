"""Camera frames for vision-language models: checks, conversion to RGB, resizing, encoding.

No rclpy here: the vlm node turns sensor_msgs/Image and CompressedImage into :class:`RawFrame` and
:class:`CompressedFrame` (which only reference the message's bytes), and everything else happens
on plain bytes and numpy arrays.

Two steps, so the camera callback stays cheap:

* :meth:`RawFrame.check` / :meth:`CompressedFrame.check` - constant-time header checks (encoding,
  sizes, image signature), done when a frame arrives; a failing frame is dropped.
* :func:`frame_to_rgb` - the real work (copy, colour conversion, JPEG/PNG decoding), done only
  when a question needs the frame.
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np

log = logging.getLogger(__name__)

# sensor_msgs/Image encodings we convert, with (channels, bytes per channel).
RAW_ENCODINGS = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
# Anything bigger is refused before it is touched (a 16k x 16k frame is a bug, not a camera).
MAX_SIDE = 16384
# Largest frame decoded (width x height, as declared in the header): a small PNG can declare
# 20000 x 20000 pixels and take 1.2 GB once decoded. 4K is 8.3 MP; the vlm's `max_pixels`.
MAX_PIXELS = 50_000_000
# CompressedImage payloads we decode, recognised by their signature (the format string is free
# text, e.g. "jpeg", "png", "bgr8; jpeg compressed bgr8").
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


class FrameError(ValueError):
    """A frame that cannot be used; the message says why (shown to callers as "bad frame: ...")."""


@dataclass(frozen=True)
class RawFrame:
    """An uncompressed frame (sensor_msgs/Image fields); data is referenced, not copied."""

    data: object  # bytes-like: bytes, bytearray, memoryview, array.array('B'), numpy array
    width: int
    height: int
    encoding: str
    step: int
    is_bigendian: bool = False
    max_pixels: int = MAX_PIXELS

    def check(self) -> None:
        """Constant-time checks; FrameError when the frame cannot be converted."""
        enc = self.encoding.lower()
        if enc not in RAW_ENCODINGS:
            raise FrameError(f"unsupported encoding '{self.encoding}' "
                             f"(supported: {', '.join(RAW_ENCODINGS)}, or JPEG/PNG compressed)")
        if not (0 < self.width <= MAX_SIDE and 0 < self.height <= MAX_SIDE):
            raise FrameError(f"bad image size {self.width}x{self.height}")
        _check_pixels(self.width, self.height, self.max_pixels)
        channels, depth = RAW_ENCODINGS[enc]
        row = self.width * channels * depth
        if self.step < row:
            raise FrameError(f"step {self.step} is smaller than width x pixel size "
                             f"({self.width} x {channels * depth} = {row} bytes) for {enc}")
        size = _nbytes(self.data)
        if size != self.step * self.height:
            raise FrameError(f"data size {size} bytes does not match step x height "
                             f"({self.step} x {self.height} = {self.step * self.height}) "
                             f"for a {self.width}x{self.height} {enc} image")


@dataclass(frozen=True)
class CompressedFrame:
    """A sensor_msgs/CompressedImage payload (JPEG or PNG)."""

    data: object
    format: str = ""
    max_pixels: int = MAX_PIXELS

    @property
    def kind(self) -> str:
        head = bytes(memoryview(self.data)[:8]) if _nbytes(self.data) else b""
        for kind, sig in _SIGNATURES.items():
            if head.startswith(sig):
                return kind
        return ""

    def check(self) -> None:
        fmt = self.format.lower()
        if "compresseddepth" in fmt:
            raise FrameError(f"compressedDepth images are not supported (format '{self.format}')")
        if not _nbytes(self.data):
            raise FrameError("empty compressed image")
        if not self.kind:
            head = bytes(memoryview(self.data)[:4]).hex()
            raise FrameError(f"compressed image is neither JPEG nor PNG (format '{self.format}', "
                             f"first bytes {head})")
        size = declared_size(self.data)
        if size is None:
            raise FrameError(f"the {self.kind.upper()} header does not say the image size "
                             f"({_nbytes(self.data)} bytes): truncated or corrupt")
        _check_pixels(*size, self.max_pixels)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FrameError(f"image of {width}x{height} pixels ({width * height / 1e6:.1f} MP) is "
                         f"over the limit of {max_pixels / 1e6:.1f} MP (vlm parameter "
                         "max_pixels); not decoded")


# JPEG start-of-frame markers (baseline, progressive, lossless, ...): not DHT, JPG, DAC.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def declared_size(data: object) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG header declares, read without decoding; None if absent."""
    b = bytes(memoryview(data)[:64]) if _nbytes(data) else b""
    if b.startswith(_SIGNATURES["png"]):
        if len(b) >= 24 and b[12:16] == b"IHDR":
            return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
        return None
    if not b.startswith(b"\xff\xd8"):
        return None
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    i, n = 2, len(view)
    while i + 4 <= n:
        if view[i] != 0xFF:
            return None
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = (view[i + 2] << 8) | view[i + 3]
        if marker in _SOF:
            if i + 9 > n:
                return None
            height = (view[i + 5] << 8) | view[i + 6]
            width = (view[i + 7] << 8) | view[i + 8]
            return width, height
        i += 2 + length
    return None


Frame = Union[RawFrame, CompressedFrame]


def _nbytes(data: object) -> int:
    return memoryview(data).nbytes  # type: ignore[arg-type]


def raw_to_rgb(frame: RawFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of a raw frame; FrameError if it does not check out."""
    frame.check()
    enc = frame.encoding.lower()
    channels, depth = RAW_ENCODINGS[enc]
    buf = np.frombuffer(memoryview(frame.data).cast("B"), dtype=np.uint8)  # type: ignore[arg-type]
    rows = buf.reshape(frame.height, frame.step)[:, :frame.width * channels * depth]
    if depth == 2:
        dtype = np.dtype(">u2" if frame.is_bigendian else "<u2")
        mono16 = np.ascontiguousarray(rows).view(dtype).reshape(frame.height, frame.width)
        return cv2.cvtColor(scale_mono16(mono16), cv2.COLOR_GRAY2RGB)
    pixels = rows.reshape(frame.height, frame.width, channels)
    if enc == "rgb8":
        return np.ascontiguousarray(pixels)
    code = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
            "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB}[enc]
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def scale_mono16(image: np.ndarray) -> np.ndarray:
    """16-bit grey to 8-bit, stretching the frame's [min, max] to [0, 255].

    Depth and IR cameras use a small part of the 16-bit range (millimetres, 10-12 bit sensors), so
    a fixed shift would give a black picture; a flat frame becomes black.
    """
    lo, hi = int(image.min()), int(image.max())
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    scaled = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def compressed_to_rgb(frame: CompressedFrame) -> np.ndarray:
    """Decode a JPEG/PNG frame to (H, W, 3) uint8 RGB; FrameError if it cannot be decoded."""
    frame.check()
    buf = np.frombuffer(memoryview(frame.data).cast("B"), dtype=np.uint8)  # type: ignore[arg-type]
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameError(f"cannot decode the {frame.kind.upper()} image "
                         f"({buf.size} bytes, format '{frame.format}')")
    if image.dtype == np.uint16:
        image = scale_mono16(image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def frame_to_rgb(frame: Frame) -> np.ndarray:
    if isinstance(frame, CompressedFrame):
        return compressed_to_rgb(frame)
    return raw_to_rgb(frame)


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most max_side, keeping the aspect."""
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_to_fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is max_side; 0 keeps the image as it is."""
    h, w = image.shape[:2]
    new_w, new_h = fit_size(w, h, max_side)
    if (new_w, new_h) == (w, h):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def encode_image(image_rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """JPEG or PNG bytes of an RGB image."""
    check_rgb(image_rgb)
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, out = cv2.imencode(".png", bgr)
    elif fmt == "jpeg":
        ok, out = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        raise ValueError(f"image format must be 'jpeg' or 'png', got '{fmt}'")
    if not ok:
        raise FrameError(f"OpenCV could not encode a {image_rgb.shape} image as {fmt}")
    return out.tobytes()


def data_uri(image_rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> str:
    """The image as a data URI, as OpenAI-style image_url parts and llama.cpp handlers take it."""
    payload = base64.b64encode(encode_image(image_rgb, fmt, quality)).decode("ascii")
    return f"data:image/{fmt};base64,{payload}"


def check_rgb(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise FrameError(f"expected an (H, W, 3) uint8 RGB image, got shape {shape} {dtype}")


def prepare(frame: Frame, max_side: int) -> np.ndarray:
    """Convert a frame to RGB and shrink it for the model (what happens once per question)."""
    return resize_to_fit(frame_to_rgb(frame), max_side)
