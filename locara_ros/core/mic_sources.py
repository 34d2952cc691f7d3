"""Microphone sources for mic_capture: a live PortAudio device, a WAV/FLAC file, or a network
microphone speaking the Wyoming protocol. No rclpy here.

Every source runs on its own thread and delivers fixed-size chunks of float32 mono audio at the
output rate, each with the capture time of its first sample (nanoseconds on the clock the caller
passes, e.g. ROS time), through ``on_chunk(samples, stamp_ns)``. Whatever the source's native
format - 44.1/48 kHz, stereo, a multi-channel array - :class:`Converter` selects or mixes the
channels, applies the gain and resamples.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from locara_ros.core.audio import AudioFormat, AudioFormatError, Rechunker, StreamResampler, decode
from locara_ros.core.worker import BoundedQueue, Empty, Policy

log = logging.getLogger(__name__)

ChunkCallback = Callable[[np.ndarray, int], None]
ErrorCallback = Callable[[str], None]
Clock = Callable[[], int]

NS = 1_000_000_000


@dataclass(frozen=True)
class OutputConfig:
    sample_rate: int = 16000
    chunk_ms: float = 20.0
    channel: int = -1  # -1: mix all channels; >= 0: take that channel
    gain_db: float = 0.0

    @property
    def chunk_samples(self) -> int:
        return max(1, int(round(self.sample_rate * self.chunk_ms / 1000.0)))


class Converter:
    """Native blocks (frames, channels) at any rate -> fixed chunks of mono at the output rate,
    stamped with the capture time of their first sample.

    Stamps follow a sample clock anchored at the first block; when a block's own capture time
    drifts from that clock by more than `resync_s` (an overrun, a gap in a network stream), the
    clock is re-anchored to it, but never back before the end of the audio already emitted:
    stamps only go forward.

    With `settle_s` > 0 (network streams, stamped on arrival) a late block moves the clock
    forward only when the lateness lasts: every block of the last `settle_s` of audio arrived
    more than `resync_s` late, and the clock moves by the smallest of those delays. A stall
    that the peer then makes up with a burst (a busy sender or receiver: the owed audio arrives
    at once, each block less late than the one before) is transit, not a gap in the audio, and
    keeps the stamps continuous (CI: a 1-s stall of the test's sender made a 1-s step in the
    stamps of continuous audio). A real gap is stamped as one `settle_s` later.
    """

    def __init__(self, rate_in: int, channels_in: int, out: OutputConfig,
                 resync_s: float = 0.1, settle_s: float = 0.0) -> None:
        if rate_in <= 0 or channels_in <= 0:
            raise AudioFormatError(f"invalid input format: {rate_in} Hz, {channels_in} channel(s)")
        if out.channel >= channels_in:
            raise AudioFormatError(f"channel {out.channel} requested, the source has "
                                   f"{channels_in} channel(s) (0..{channels_in - 1})")
        self.rate_in, self.channels_in, self.out = int(rate_in), int(channels_in), out
        self.gain = float(10.0 ** (out.gain_db / 20.0))
        self._resampler = StreamResampler(self.rate_in, out.sample_rate)
        self._rechunker = Rechunker(out.chunk_samples)
        self._resync_ns = int(resync_s * NS)
        self._settle_frames = int(round(settle_s * self.rate_in))
        self._late_frames = 0  # input frames of the current run of late blocks
        self._late_min_ns = 0  # the smallest lateness in that run
        self._anchor_ns: int | None = None  # capture time of input frame _anchor_frame
        self._anchor_frame = 0
        self._in_frames = 0  # input frames pushed so far
        self._out_emitted = 0  # output samples emitted so far
        self._out_end_ns = 0  # capture time just after the last emitted sample

    def _mono(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(-1, 1) if self.channels_in == 1 else x.reshape(-1, self.channels_in)
        if x.shape[1] != self.channels_in:
            raise AudioFormatError(f"block has {x.shape[1]} channels, expected "
                                   f"{self.channels_in}")
        if self.out.channel >= 0:
            mono = x[:, self.out.channel]
        else:
            mono = x.mean(axis=1, dtype=np.float32)
        if self.gain != 1.0:
            mono = mono * self.gain
        return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)

    def push(self, block: np.ndarray, stamp_ns: int | None) -> list[tuple[np.ndarray, int]]:
        """Add a block whose first frame was captured at stamp_ns (None: continue the sample
        clock); return the finished (chunk, stamp) pairs."""
        mono = self._mono(block)
        if stamp_ns is not None:
            if self._anchor_ns is None:
                self._anchor_ns, self._anchor_frame = int(stamp_ns), self._in_frames
            else:
                expected = self._frame_ns(self._in_frames)
                off = int(stamp_ns) - expected
                if off > self._resync_ns and self._settle_frames:
                    # late: re-anchor only once the lateness has lasted settle_s of audio
                    self._late_min_ns = (off if self._late_frames == 0
                                         else min(self._late_min_ns, off))
                    self._late_frames += mono.shape[0]
                    if self._late_frames >= self._settle_frames:
                        log.debug("audio clock moved forward %.3f s (a gap in the stream)",
                                  self._late_min_ns / 1e9)
                        self._anchor_ns = expected + self._late_min_ns
                        self._anchor_frame = self._in_frames
                        self._late_frames = 0
                elif abs(off) > self._resync_ns:
                    self._late_frames = 0
                    log.debug("audio clock re-anchored (%.3f s off)", (stamp_ns - expected) / 1e9)
                    # never back before what is already out: stamps only go forward (a block
                    # that arrives early after a stall says the clock ran ahead, not that the
                    # audio already published was captured later than stamped)
                    held = max(0.0, self._in_frames
                               - self._out_emitted * self.rate_in / self.out.sample_rate)
                    floor = self._out_end_ns + int(held * NS / self.rate_in)
                    self._anchor_ns = max(int(stamp_ns), floor)
                    self._anchor_frame = self._in_frames
                else:
                    self._late_frames = 0
        elif self._anchor_ns is None:
            self._anchor_ns, self._anchor_frame = 0, 0
        self._in_frames += mono.shape[0]
        return self._emit(self._resampler.process(mono))

    def _frame_ns(self, frame: float) -> int:
        assert self._anchor_ns is not None
        return self._anchor_ns + int((frame - self._anchor_frame) * NS / self.rate_in)

    def _emit(self, resampled: np.ndarray) -> list[tuple[np.ndarray, int]]:
        out = []
        for chunk in self._rechunker.push(resampled):
            out.append((chunk, self._out_stamp()))
            self._out_emitted += chunk.size
            self._out_end_ns = self._out_stamp()
        return out

    def _out_stamp(self) -> int:
        return self._frame_ns(self._out_emitted * self.rate_in / self.out.sample_rate)

    def flush(self) -> list[tuple[np.ndarray, int]]:
        """End of stream: the rest of the resampler, zero-padded to a whole chunk."""
        if self._anchor_ns is None:
            return []
        out = self._emit(self._resampler.process(np.zeros(0, np.float32), last=True))
        rest = self._rechunker.flush()
        if rest.size:
            pad = np.zeros(self.out.chunk_samples, dtype=np.float32)
            pad[:rest.size] = rest
            out.append((pad, self._out_stamp()))
            self._out_emitted += pad.size
            self._out_end_ns = self._out_stamp()
        return out


class MicSource:
    """Base: a thread that produces chunks until stop()."""

    kind = "source"

    def __init__(self, out: OutputConfig, on_chunk: ChunkCallback,
                 on_error: ErrorCallback | None = None, clock: Clock = time.time_ns) -> None:
        self.out = out
        self.on_chunk = on_chunk
        self.on_error = on_error or (lambda msg: log.error("%s", msg))
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.chunks_out = 0

    def start(self) -> MicSource:
        # daemon: a process told to stop while its owner was still being built (SIGINT in the
        # node's constructor, so stop() is never called) must not wait for a source that
        # retries a missing device forever
        self._thread = threading.Thread(target=self._run_guarded, name=f"mic-{self.kind}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wake(self) -> None:
        """Interrupt blocking waits in _run (subclasses)."""

    def _deliver(self, pairs: list[tuple[np.ndarray, int]]) -> None:
        for chunk, stamp in pairs:
            self.chunks_out += 1
            self.on_chunk(chunk, stamp)

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - a source thread must report, not vanish
            self.on_error(f"{self.kind} source stopped by an unexpected error: "
                          f"{type(e).__name__}: {e}")

    def _run(self) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------- file
class FileSource(MicSource):
    """Replay a WAV/FLAC (anything libsndfile reads) in real time or as fast as possible."""

    kind = "file"

    def __init__(self, path: str | Path, out: OutputConfig, on_chunk: ChunkCallback, *,
                 realtime: bool = True, loop: bool = False, lead_silence: float = 0.0,
                 trail_silence: float = 0.0, on_finished: Callable[[], None] | None = None,
                 on_error: ErrorCallback | None = None, clock: Clock = time.time_ns,
                 block_frames: int = 4096) -> None:
        super().__init__(out, on_chunk, on_error, clock)
        import soundfile as sf
        self.path = Path(path)
        try:
            info = sf.info(str(self.path))
        except Exception as e:
            raise RuntimeError(f"audio file '{self.path}' cannot be read: {e}") from e
        self.file_rate, self.file_channels = int(info.samplerate), int(info.channels)
        self.file_seconds = float(info.frames) / info.samplerate if info.samplerate else 0.0
        Converter(self.file_rate, self.file_channels, out)  # validates channel selection
        self.realtime, self.loop = bool(realtime), bool(loop)
        self.lead_silence, self.trail_silence = max(0.0, lead_silence), max(0.0, trail_silence)
        self.on_finished = on_finished
        self.block_frames = int(block_frames)
        self.passes = 0
        self.finished = threading.Event()

    def describe(self) -> str:
        return (f"file '{self.path}' ({self.file_rate} Hz, {self.file_channels} ch, "
                f"{self.file_seconds:.2f} s, {'real time' if self.realtime else 'fast'}"
                f"{', looping' if self.loop else ''})")

    def _wake(self) -> None:
        pass

    def _run(self) -> None:
        import soundfile as sf
        t0_ns = self.clock()
        t0_mono = time.monotonic()
        produced = 0  # output samples since t0 (the timeline of the replay)
        rate = self.out.sample_rate

        def send(pairs: list[tuple[np.ndarray, int]]) -> bool:
            nonlocal produced
            for chunk, _ in pairs:
                if self._stop.is_set():
                    return False
                stamp = t0_ns + produced * NS // rate
                produced += chunk.size
                if self.realtime:  # publish when the chunk would be fully captured
                    delay = t0_mono + produced / rate - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return False
                self.chunks_out += 1
                self.on_chunk(chunk, stamp)
            return True

        def silence(seconds: float, conv: Converter) -> bool:
            n = int(round(seconds * self.file_rate))
            while n > 0:
                k = min(n, self.block_frames)
                if not send(conv.push(np.zeros((k, self.file_channels), np.float32), None)):
                    return False
                n -= k
            return True

        while not self._stop.is_set():
            conv = Converter(self.file_rate, self.file_channels, self.out)
            if not silence(self.lead_silence, conv):
                return
            with sf.SoundFile(str(self.path)) as f:
                for block in f.blocks(blocksize=self.block_frames, dtype="float32",
                                      always_2d=True):
                    if not send(conv.push(block, None)):
                        return
            if not silence(self.trail_silence, conv):
                return
            if not send(conv.flush()):
                return
            self.passes += 1
            if not self.loop:
                break
        self.finished.set()
        if self.on_finished is not None:
            self.on_finished()


# ---------------------------------------------------------------------------- device
class DeviceSource(MicSource):
    """A live input device through PortAudio (sounddevice), reopened with backoff on failure.

    The PortAudio callback only copies the block and its capture time into a bounded queue; this
    source's thread converts and delivers. A stream that stops delivering for `stall_s` seconds
    (device unplugged) is closed and reopened.
    """

    kind = "device"

    def __init__(self, device: str, out: OutputConfig, on_chunk: ChunkCallback, *,
                 native_rate: int = 0, channels: int = 0, block_ms: float = 20.0,
                 retry_initial: float = 1.0, retry_max: float = 30.0, stall_s: float = 2.0,
                 on_error: ErrorCallback | None = None,
                 on_open: Callable[[str], None] | None = None,
                 clock: Clock = time.time_ns) -> None:
        super().__init__(out, on_chunk, on_error, clock)
        self.device = device.strip()
        self.native_rate, self.channels = int(native_rate), int(channels)
        self.block_ms = float(block_ms)
        self.retry_initial, self.retry_max = max(0.01, retry_initial), max(retry_initial, retry_max)
        self.stall_s = stall_s
        self.on_open = on_open
        # PortAudio's callback -> this source's thread; a stalled reader drops the oldest
        # blocks (live audio: the newest matters), counted and logged
        self._blocks: BoundedQueue[Any] = BoundedQueue("mic-device", 200, Policy.DROP_OLDEST,
                                                       on_drop=self._on_block_dropped)
        self.failures = 0
        self.retry_delays: list[float] = []
        self.opened = threading.Event()
        self._converter: Converter | None = None
        self._status_errors = 0

    def _wake(self) -> None:
        self._blocks.put(None)

    def _on_block_dropped(self, _block: Any) -> None:
        dropped = self._blocks.counts.dropped
        if dropped == 1 or dropped % 100 == 0:
            log.warning("input device '%s': %d audio block(s) dropped (the reader is behind)",
                        self.device or "default", dropped)

    def _device_arg(self) -> int | str | None:
        if not self.device:
            return None
        return int(self.device) if self.device.lstrip("-").isdigit() else self.device

    def open_stream(self):
        """Open and start a sounddevice.InputStream; raises with a clear message on failure."""
        try:
            import sounddevice as sd
        except OSError as e:  # the PortAudio library itself is missing
            raise RuntimeError(f"PortAudio is not available ({e}); install libportaudio2") from e
        what = f"input device '{self.device or 'default'}'"
        try:
            info = sd.query_devices(self._device_arg(), "input")
        except (ValueError, sd.PortAudioError) as e:
            raise RuntimeError(f"{what} not found: {e}") from e
        rate = self.native_rate or int(info["default_samplerate"])
        channels = self.channels or int(info["max_input_channels"])
        if channels < 1:
            raise RuntimeError(f"{what} ({info['name']}) has no input channels")
        self._converter = Converter(rate, channels, self.out)
        clock = self.clock

        def callback(indata, frames, t, status):  # PortAudio thread: copy and go
            now_ns = clock()
            try:
                delay = max(0.0, float(t.currentTime - t.inputBufferAdcTime))
            except (AttributeError, TypeError):
                delay = 0.0
            if status:
                self._status_errors += 1
            stamp = now_ns - int(delay * NS) - frames * NS // rate
            self._blocks.put((indata.copy(), stamp))

        try:
            stream = sd.InputStream(device=self._device_arg(), samplerate=rate,
                                    channels=channels, dtype="float32",
                                    blocksize=max(1, int(rate * self.block_ms / 1000)),
                                    callback=callback)
            stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise RuntimeError(f"{what} ({info['name']}) failed to open at {rate} Hz, "
                               f"{channels} ch: {e}") from e
        return stream, f"{info['name']} ({rate} Hz, {channels} ch)"

    def process_block(self, block: np.ndarray, stamp_ns: int) -> None:
        """Convert and deliver one native block (what the PortAudio callback queued)."""
        assert self._converter is not None
        self._deliver(self._converter.push(block, stamp_ns))

    def _run(self) -> None:
        delay = self.retry_initial
        while not self._stop.is_set():
            try:
                stream, desc = self.open_stream()
            except Exception as e:  # noqa: BLE001 - any open failure is retried
                self.failures += 1
                self.retry_delays.append(delay)
                self.on_error(f"microphone: {e}; retry in {delay:.1f} s")
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2.0, self.retry_max)
                continue
            delay = self.retry_initial
            self.opened.set()
            if self.on_open is not None:
                self.on_open(desc)
            try:
                reason = self._pump(stream)
            finally:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - the device may already be gone
                    pass
                self.opened.clear()
            if reason:
                self.failures += 1
                self.on_error(f"microphone {desc}: {reason}; reopening in {delay:.1f} s")
                if self._stop.wait(delay):
                    return

    def _pump(self, stream) -> str:
        """Deliver blocks until stop (returns "") or the stream fails (returns why)."""
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                item = self._blocks.get(timeout=0.2)
            except Empty:
                item = False
            if item is None:
                continue
            if item is False:
                if not stream.active:
                    return "stream stopped (device removed?)"
                if time.monotonic() - last > self.stall_s:
                    return f"no audio for {self.stall_s:.1f} s (device removed?)"
                continue
            last = time.monotonic()
            self.process_block(*item)
        return ""


# ---------------------------------------------------------------------------- wyoming
_WIDTH_FORMATS = {1: "U8", 2: "S16LE", 4: "S32LE"}
# Network chunks are stamped on arrival; arrival times off the sample clock by less than this are
# jitter, not a gap (CI: a sender in a busy process 0.23 s late made a 0.26-s step in the stamps
# of continuous audio with the device sources' 0.1 s).
NETWORK_RESYNC_S = 0.5
# ... and a late stretch is a gap in the audio only when it lasts this much audio (a stall made up
# by a burst is not: CI saw a 1-s stall of a busy sender, then the owed audio at once).
NETWORK_SETTLE_S = 2.0


class _WyomingStream:
    """One Wyoming peer's audio (audio-start, audio-chunk..., audio-stop) -> the source's chunks.

    A stream may carry its own format (rate, width, channels); a chunk without audio-start, or
    in another format, (re)starts the stream on the chunk's format. Chunks are stamped with their
    arrival time less their duration (the peer's own timestamps are on the peer's clock), through
    a sample clock that takes up to NETWORK_RESYNC_S of arrival jitter, and stalls that the peer
    makes up within NETWORK_SETTLE_S of audio.
    `claim()` is asked when a stream begins (False: ignore it); `owns()` before each chunk.
    """

    def __init__(self, source: MicSource, peer: str, *,
                 claim: Callable[[], bool] = lambda: True,
                 owns: Callable[[], bool] = lambda: True) -> None:
        self.source, self.peer = source, peer
        self.claim, self.owns = claim, owns
        self.fmt: AudioFormat | None = None
        self.conv: Converter | None = None
        self.chunks_in = 0

    def handle(self, event) -> bool:
        """Consume an audio event; False when `event` is not audio."""
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        if AudioStart.is_type(event.type):
            self.flush()
            start = AudioStart.from_event(event)
            self._begin(start.rate, start.width, start.channels)
            return True
        if AudioChunk.is_type(event.type):
            self._chunk(AudioChunk.from_event(event))
            return True
        if AudioStop.is_type(event.type):
            self.flush()
            return True
        return False

    def _begin(self, rate: int, width: int, channels: int) -> bool:
        fmt_name = _WIDTH_FORMATS.get(int(width))
        try:
            if fmt_name is None:
                raise AudioFormatError(f"unsupported sample width {width} bytes")
            self.fmt = AudioFormat(int(rate), int(channels), fmt_name)
            # arrival times jitter (Wi-Fi, a busy sender or receiver): the sample clock absorbs
            # up to NETWORK_RESYNC_S of it and re-anchors only on a real gap in the stream
            self.conv = Converter(int(rate), int(channels), self.source.out,
                                  resync_s=NETWORK_RESYNC_S, settle_s=NETWORK_SETTLE_S)
        except AudioFormatError as e:
            self.source.on_error(f"wyoming: {self.peer}: {e}; stream ignored")
            self.fmt = self.conv = None
            return False
        return self.claim()

    def _chunk(self, chunk) -> None:
        if self.fmt is None or (chunk.rate, chunk.width, chunk.channels) != (
                self.fmt.sample_rate, self.fmt.dtype.itemsize, self.fmt.channels):
            self.flush()
            if not self._begin(chunk.rate, chunk.width, chunk.channels):
                return
        if not self.owns() or self.conv is None or self.fmt is None:
            return
        try:
            block = decode(chunk.audio, self.fmt)
        except AudioFormatError as e:
            self.source.on_error(f"wyoming: {self.peer}: bad chunk: {e}")
            return
        self.chunks_in += 1
        stamp = self.source.clock() - block.shape[0] * NS // self.fmt.sample_rate
        self.source._deliver(self.conv.push(block, stamp))

    def flush(self) -> None:
        if self.conv is not None and self.owns():
            self.source._deliver(self.conv.flush())
        self.conv = None
        self.fmt = None


class WyomingSource(MicSource):
    """A Wyoming-protocol TCP server: satellites send audio-start, audio-chunk..., audio-stop.

    Each connection may stream audio in its own format (rate, width, channels); chunks are
    converted like any other source. One satellite streams at a time; a second connection takes
    over (the previous stream is flushed). `describe` is answered with an Info naming this mic.
    """

    kind = "wyoming"

    def __init__(self, host: str, port: int, out: OutputConfig, on_chunk: ChunkCallback, *,
                 on_error: ErrorCallback | None = None,
                 on_client: Callable[[str], None] | None = None,
                 clock: Clock = time.time_ns) -> None:
        super().__init__(out, on_chunk, on_error, clock)
        self.host, self.port = host, int(port)
        self.on_client = on_client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self.listening = threading.Event()
        self.bound_port = 0
        self.streams = 0
        self._active: object | None = None

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(lambda: None)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        from wyoming.server import AsyncTcpServer
        server = AsyncTcpServer(self.host, self.port)
        try:
            await server.start(self._handler_factory())
        except OSError as e:
            self.on_error(f"wyoming: cannot listen on {self.host}:{self.port}: {e}")
            return
        self._server = server
        sockets = server._server.sockets if server._server is not None else []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        self.listening.set()
        try:
            while not self._stop.is_set():
                await asyncio.sleep(0.1)
        finally:
            await server.stop()

    def _handler_factory(self):
        from wyoming.event import Event
        from wyoming.info import Describe
        from wyoming.server import AsyncEventHandler

        source = self

        class Handler(AsyncEventHandler):
            def __init__(self, reader, writer) -> None:
                super().__init__(reader, writer)
                peer = writer.get_extra_info("peername")
                self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
                self.stream = _WyomingStream(source, f"satellite {self.peer}",
                                             claim=self._claim,
                                             owns=lambda: source._active is self)
                if source.on_client is not None:
                    source.on_client(f"satellite {self.peer} connected")

            def _claim(self) -> bool:
                if source._active is not None and source._active is not self:
                    source.on_error(f"wyoming: satellite {self.peer} took over the stream")
                source._active = self
                source.streams += 1
                return True

            async def handle_event(self, event: Event) -> bool:
                if Describe.is_type(event.type):
                    await self.write_event(source._info_event())
                    return True
                self.stream.handle(event)
                return True  # other events (ping, detections) are not ours

            async def disconnect(self) -> None:
                self.stream.flush()
                if source._active is self:
                    source._active = None
                if source.on_client is not None:
                    source.on_client(f"satellite {self.peer} disconnected")

        return Handler

    def _info_event(self):
        """The answer to `describe`: this receiver as a Wyoming mic program."""
        from wyoming.audio import AudioFormat as WyomingFormat
        from wyoming.info import Attribution, Info, MicProgram
        return Info(mic=[MicProgram(
            name="locara_ros mic_capture", description="ROS 2 audio/mic receiver",
            attribution=Attribution(name="locara_ros", url=""), installed=True, version=None,
            mic_format=WyomingFormat(rate=self.out.sample_rate, width=2, channels=1))]).event()


class WyomingClientSource(MicSource):
    """Connects to a running Wyoming satellite or microphone service and streams its audio.

    `uri` is tcp://host:port (or unix:///path). After connecting it sends `describe`. A peer that
    answers as a satellite (its info has `satellite`), or any peer when `mode` is "satellite", is
    sent `run-satellite`, and streams audio (a stock wyoming-satellite without a wake word streams
    at once; with one, after the wake word). A microphone service (mode "mic", or a peer that
    answers with `mic` programs only or streams before it answers) streams as soon as it is
    connected; it counts as lost when it sends no audio for `stall_s`. A refused, failed or lost
    connection is retried with a doubling delay (`retry_initial` .. `retry_max`), back to
    `retry_initial` once a connection has delivered audio. `ping` is answered with `pong`.
    """

    kind = "wyoming-client"
    MODES = ("auto", "mic", "satellite")

    def __init__(self, uri: str, out: OutputConfig, on_chunk: ChunkCallback, *,
                 mode: str = "auto", retry_initial: float = 1.0, retry_max: float = 30.0,
                 connect_timeout: float = 5.0, stall_s: float = 5.0,
                 on_error: ErrorCallback | None = None,
                 on_client: Callable[[str], None] | None = None,
                 clock: Clock = time.time_ns) -> None:
        super().__init__(out, on_chunk, on_error, clock)
        from urllib.parse import urlparse
        parsed = urlparse(uri)
        if parsed.scheme not in ("tcp", "unix") or not (parsed.netloc or parsed.path):
            raise ValueError(f"wyoming uri '{uri}' is not tcp://host:port or unix:///path")
        if parsed.scheme == "tcp" and parsed.port is None:
            raise ValueError(f"wyoming uri '{uri}' has no port (tcp://host:port)")
        if mode not in self.MODES:
            raise ValueError(f"wyoming mode '{mode}' is not one of {', '.join(self.MODES)}")
        self.uri, self.mode = uri, mode
        self.retry_initial = max(0.01, float(retry_initial))
        self.retry_max = max(self.retry_initial, float(retry_max))
        self.connect_timeout, self.stall_s = float(connect_timeout), float(stall_s)
        self.on_client = on_client
        self.connected = threading.Event()
        self.connections = 0
        self.failures = 0
        self.retry_delays: list[float] = []
        self.peer_kind = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def describe(self) -> str:
        return f"wyoming client of {self.uri} ({self.mode})"

    def _wake(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and loop.is_running():
            loop.call_soon_threadsafe(task.cancel)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._main())
            if self._stop.is_set():
                self._task.cancel()
            try:
                loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
        finally:
            loop.close()
            self._loop = self._task = None

    async def _main(self) -> None:
        delay = self.retry_initial
        while not self._stop.is_set():
            try:
                reason, streamed = await self._session()
            except Exception as e:  # noqa: BLE001 - a peer's oddity must not end the retries
                reason, streamed = f"unexpected error ({type(e).__name__}: {e})", False
            if self._stop.is_set():
                return
            if streamed:
                delay = self.retry_initial
            self.failures += 1
            self.retry_delays.append(delay)
            self.on_error(f"wyoming: {self.uri}: {reason}; reconnecting in {delay:.1f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, self.retry_max)

    async def _session(self) -> tuple[str, bool]:
        """One connection: returns why it ended and whether it delivered audio."""
        from wyoming.client import AsyncClient
        from wyoming.error import Error
        from wyoming.info import Describe, Info
        from wyoming.ping import Ping, Pong

        client = AsyncClient.from_uri(self.uri)
        try:
            await asyncio.wait_for(client.connect(), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            return f"cannot connect ({type(e).__name__}: {e})".replace(": )", ")"), False
        stream = _WyomingStream(self, self.uri)
        loop = asyncio.get_running_loop()
        try:
            await client.write_event(Describe().event())
            kind = "" if self.mode == "auto" else self.mode  # "": not known yet
            if kind:
                await self._connected(client, kind, "")
            deadline = loop.time() + self.connect_timeout
            while True:
                timeout = (max(0.0, deadline - loop.time()) if not kind else
                           self.stall_s if kind == "mic" else None)
                try:
                    event = await asyncio.wait_for(client.read_event(), timeout)
                except asyncio.TimeoutError:
                    if not kind:
                        return f"no answer to describe within {self.connect_timeout:g} s", False
                    return f"no audio for {self.stall_s:g} s", stream.chunks_in > 0
                if event is None:
                    return "connection closed by the peer", stream.chunks_in > 0
                if Info.is_type(event.type):
                    if not kind:
                        info = Info.from_event(event)
                        kind = "satellite" if info.satellite is not None else "mic"
                        name = (info.satellite.name if info.satellite is not None else
                                info.mic[0].name if info.mic else "")
                        await self._connected(client, kind, name)
                elif Ping.is_type(event.type):
                    await client.write_event(Pong(text=Ping.from_event(event).text).event())
                elif Error.is_type(event.type):
                    self.on_error(f"wyoming: {self.uri}: the peer reports: "
                                  f"{Error.from_event(event).text}")
                elif stream.handle(event) and not kind:
                    kind = "mic"  # it streams without answering describe: a microphone
                    await self._connected(client, kind, "")
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            return f"connection lost ({type(e).__name__}: {e})", stream.chunks_in > 0
        finally:
            self.connected.clear()
            stream.flush()
            try:
                await client.disconnect()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass

    async def _connected(self, client, kind: str, name: str) -> None:
        from wyoming.satellite import RunSatellite
        self.peer_kind = kind
        self.connections += 1
        self.connected.set()
        if kind == "satellite":
            await client.write_event(RunSatellite().event())
        if self.on_client is not None:
            what = kind + (f" '{name}'" if name else "")
            self.on_client(f"wyoming: connected to the {what} at {self.uri}"
                           + ("; sent run-satellite" if kind == "satellite" else ""))
