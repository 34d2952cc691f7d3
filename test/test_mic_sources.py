"""mic_capture's sources without ROS: conversion of real multi-channel files, file replay, device
errors with backoff, a real Wyoming client streaming to the Wyoming source, and the Wyoming
client source against peers built on the wyoming package's own server classes."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from locara_ros.testing.speech import silence, synthesize, write_wav

from locara_ros.core.audio import AudioFormatError, encode_s16le, resample
from locara_ros.core.mic_sources import (
    Converter,
    NETWORK_RESYNC_S,
    NETWORK_SETTLE_S,
    DeviceSource,
    FileSource,
    OutputConfig,
    WyomingClientSource,
    WyomingSource,
)

pytestmark = pytest.mark.filterwarnings("ignore:'audioop' is deprecated:DeprecationWarning")


class Sink:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.stamps: list[int] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, chunk: np.ndarray, stamp: int) -> None:
        with self.lock:
            self.chunks.append(chunk.copy())
            self.stamps.append(stamp)

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def audio(self) -> np.ndarray:
        with self.lock:
            return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalized cross-correlation over small lags (resamplers delay a little)."""
    n = min(a.size, b.size)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    best = 0.0
    for lag in range(-40, 41):
        x, y = (a[lag:], b[:n - lag]) if lag >= 0 else (a[:n + lag], b[-lag:])
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9)))
    return best


@pytest.fixture(scope="module")
def speech16():
    return np.concatenate([silence(0.2), synthesize("open the door please"), silence(0.2)])


def test_device_conversion_path_with_a_real_48k_four_channel_file(speech16, tmp_path):
    """What the PortAudio callback queues (native blocks, 4 channels at 48 kHz, like a ReSpeaker
    array) goes through DeviceSource.process_block: mono 16 kHz chunks, channel selection, gain."""
    speech48 = resample(speech16, 16000, 48000)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(speech48.size) / 48000)).astype(np.float32)
    four = np.stack([speech48, tone, speech48 * 0.5, np.zeros_like(tone)], axis=1)
    path = tmp_path / "array.wav"
    sf.write(str(path), four, 48000, subtype="PCM_16")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)

    for channel, gain_db, expect in ((0, 0.0, speech16), (1, 0.0, None), (-1, 6.0, None)):
        sink = Sink()
        out = OutputConfig(sample_rate=16000, chunk_ms=20, channel=channel, gain_db=gain_db)
        dev = DeviceSource("file-backed", out, sink)
        dev._converter = Converter(rate, data.shape[1], out)
        t0 = 1_000_000_000
        for i in range(0, data.shape[0], 960):  # 20 ms PortAudio blocks
            dev.process_block(data[i:i + 960], t0 + i * 1_000_000_000 // rate)
        got = sink.audio()
        assert all(c.size == 320 for c in sink.chunks)
        # Live streams are never flushed: the resampler delay and a partial chunk stay behind.
        assert speech16.size - 1000 <= got.size <= speech16.size
        assert np.diff(sink.stamps).tolist() == [20_000_000] * (len(sink.stamps) - 1)
        if channel == 0:
            assert similarity(got, expect) > 0.95
        elif channel == 1:  # the tone channel, not the speech
            assert similarity(got, speech16) < 0.3
            assert np.sqrt(np.mean(got[1600:-1600] ** 2)) == pytest.approx(0.3 / np.sqrt(2),
                                                                          rel=0.05)
        else:  # mix of all four, +6 dB
            mix = resample(four.mean(axis=1), 48000, 16000) * 10 ** (6 / 20)
            assert similarity(got, np.clip(mix, -1, 1)) > 0.95


def test_converter_rejects_a_missing_channel():
    with pytest.raises(AudioFormatError, match="channel 3 requested"):
        Converter(48000, 2, OutputConfig(channel=3))


def test_converter_stamps_only_go_forward_when_a_stalled_stream_bursts():
    """A network stream stamped on arrival: 0.6 s of blocks held up and then delivered at once
    (a busy machine). The clock may jump forward at the stall, but the burst must not move it
    back before audio already published (CI once saw audio/mic stamps out of order)."""
    out = OutputConfig(sample_rate=16000, chunk_ms=30.0)
    conv = Converter(22050, 1, out)
    block, ns = 1102, 1_000_000_000 * 1102 // 22050  # 50 ms blocks
    arrivals = [k * ns for k in range(20)]  # on time
    arrivals += [20 * ns + 600_000_000] * 12  # held up 0.6 s, then all at once
    arrivals += [(32 + k) * ns + 200_000_000 for k in range(20)]  # on time again, less behind
    chunks = []
    for t in arrivals:
        chunks += conv.push(np.zeros(block, np.float32), t)
    stamps = np.array([t for _, t in chunks])
    steps = np.diff(stamps)
    chunk_ns = 30_000_000
    assert (steps >= chunk_ns - 1_000).all(), steps.min() / 1e6  # none before the last ends
    assert steps.max() > 0.3e9  # the stall's jump forward is kept (the clock was re-anchored)
    sent = len(arrivals) * block * 16000 / 22050  # less what the resampler and chunker hold
    assert sent - 3 * out.chunk_samples < sum(c.size for c, _ in chunks) <= sent


def test_network_stream_stamps_absorb_arrival_jitter():
    """Continuous audio from a network peer, stamped on arrival: blocks 0.25 s late (a busy
    sender, Wi-Fi) are jitter, not gaps: the stamps stay one chunk apart (CI once saw a 0.26-s
    step with the device sources' 0.1 s resync). A real gap (a 2-s pause) still moves the clock,
    once the lateness has lasted NETWORK_SETTLE_S of audio, by the smallest delay seen."""
    out = OutputConfig(sample_rate=16000, chunk_ms=30.0)
    conv = Converter(16000, 1, out, resync_s=NETWORK_RESYNC_S, settle_s=NETWORK_SETTLE_S)
    block, ns = 800, 50_000_000  # 50 ms blocks
    late = {7: 250_000_000, 8: 200_000_000, 15: 300_000_000}
    arrivals = [k * ns + late.get(k, 0) for k in range(30)]
    after = int(NETWORK_SETTLE_S / 0.05) + 20  # the settling, and 1 s more
    jitter = [30_000_000 * (k % 3) for k in range(after)]  # 0..60 ms more
    arrivals += [(30 + k) * ns + 2_000_000_000 + j for k, j in enumerate(jitter)]  # a 2-s pause
    chunks = []
    for t in arrivals:
        chunks += conv.push(np.zeros(block, np.float32), t)
    stamps = np.array([t for _, t in chunks])
    steps = np.diff(stamps) / 1e6
    jump = steps.argmax()
    assert np.allclose(np.delete(steps, jump), 30.0, atol=0.01), np.delete(steps, jump).max()
    assert steps[jump] == pytest.approx(2030.0, abs=1.0)  # the pause, by its smallest delay
    # the jump comes NETWORK_SETTLE_S into the late audio (the audio before it is stamped early)
    assert (stamps[jump + 1] - stamps[0]) / 1e9 == pytest.approx(
        (30 * 0.05 + NETWORK_SETTLE_S) + 2.0, abs=0.06)


def test_network_stream_stall_made_up_by_a_burst_keeps_stamps_continuous():
    """CI: the test's satellite (a busy pytest process) stalled 1 s and then sent the owed
    audio at once; every sample arrived, yet the stamps had a 1035-ms step. The stall is
    transit, not a gap: the stamps stay one chunk apart."""
    out = OutputConfig(sample_rate=16000, chunk_ms=30.0)
    conv = Converter(22050, 2, out, resync_s=NETWORK_RESYNC_S, settle_s=NETWORK_SETTLE_S)
    block, ns = 1102, 1_000_000_000 * 1102 // 22050  # 50 ms of 22.05 kHz stereo
    arrivals = [k * ns for k in range(20)]
    arrivals += [20 * ns + 1_000_000_000 + k * 200_000 for k in range(21)]  # 1 s late, a burst
    arrivals += [(41 + k) * ns + 3_000_000 for k in range(20)]  # on time again
    chunks = []
    for t in arrivals:
        chunks += conv.push(np.zeros((block, 2), np.float32), t)
    steps = np.diff([t for _, t in chunks]) / 1e6
    assert np.allclose(steps, 30.0, atol=0.05), steps.max()


def test_missing_device_is_retried_with_backoff():
    sink = Sink()
    dev = DeviceSource("no-such-microphone-7", OutputConfig(), sink, retry_initial=0.05,
                       retry_max=0.2, on_error=sink.error).start()
    try:
        deadline = time.monotonic() + 10
        while dev.failures < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        dev.stop()
    assert dev.retry_delays[:4] == [0.05, 0.1, 0.2, 0.2]
    assert "no-such-microphone-7" in sink.errors[0] and "retry in" in sink.errors[0]
    assert not dev.opened.is_set() and not dev.running


def test_file_source_silence_padding_and_loop(speech16, tmp_path):
    path = write_wav(tmp_path / "s.flac", speech16, rate=16000, subtype="PCM_16")
    sink, done = Sink(), threading.Event()
    src = FileSource(path, OutputConfig(chunk_ms=20), sink, realtime=False, lead_silence=0.5,
                     trail_silence=0.25, on_finished=done.set)
    src.start()
    assert done.wait(20)
    src.stop()
    got = sink.audio()
    expect = 0.5 * 16000 + speech16.size + 0.25 * 16000
    assert got.size == pytest.approx(expect, abs=320)
    assert np.all(got[:7900] == 0) and similarity(got[8000:], speech16) > 0.99
    assert np.diff(sink.stamps).tolist() == [20_000_000] * (len(sink.stamps) - 1)

    looped = Sink()
    src = FileSource(path, OutputConfig(chunk_ms=20), looped, realtime=False, loop=True)
    src.start()
    deadline = time.monotonic() + 20
    while src.passes < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    src.stop()
    assert src.passes >= 3 and not src.finished.is_set()


def test_file_source_real_time_pacing(speech16, tmp_path):
    path = write_wav(tmp_path / "s.wav", speech16[:8000], rate=16000)
    sink = Sink()
    src = FileSource(path, OutputConfig(chunk_ms=20), sink, realtime=True)
    t0 = time.monotonic()
    src.start()
    assert src.finished.wait(10)
    elapsed = time.monotonic() - t0
    src.stop()
    assert elapsed >= 0.45  # half a second of audio is not replayed faster than real time
    assert len(sink.chunks) == 25


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"this is not a wav file")
    with pytest.raises(RuntimeError, match="not_audio.wav"):
        FileSource(bad, OutputConfig(), Sink())


def test_wyoming_source_receives_a_real_client_stream(speech16):
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    sink = Sink()
    src = WyomingSource("127.0.0.1", 0, OutputConfig(chunk_ms=20), sink, on_error=sink.error)
    src.start()
    try:
        assert src.listening.wait(5)
        rate = 44100
        speech = resample(speech16, 16000, rate)
        pcm = encode_s16le(np.stack([speech, -speech], axis=1).reshape(-1))  # stereo

        async def client() -> Info:
            async with AsyncTcpClient("127.0.0.1", src.bound_port) as c:
                await c.write_event(Describe().event())
                info = Info.from_event(await asyncio.wait_for(c.read_event(), 5))
                await c.write_event(AudioStart(rate=rate, width=2, channels=2).event())
                for i in range(0, len(pcm), 4096):
                    await c.write_event(AudioChunk(rate=rate, width=2, channels=2,
                                                   audio=pcm[i:i + 4096]).event())
                await c.write_event(AudioStop().event())
                await asyncio.sleep(0.3)
                return info

        info = asyncio.run(client())
        deadline = time.monotonic() + 5
        while sink.audio().size < speech16.size - 320 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        src.stop()
    assert info.mic[0].mic_format.rate == 16000 and info.mic[0].mic_format.channels == 1
    got = sink.audio()
    assert got.size == pytest.approx(speech16.size, abs=640)
    # Channels mixed: speech and its inverse cancel. Select channel 0 to hear the speech.
    assert np.abs(got).max() < 0.01
    assert src.streams == 1 and not sink.errors


def test_wyoming_source_picks_a_channel(speech16):
    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient

    sink = Sink()
    src = WyomingSource("127.0.0.1", 0, OutputConfig(chunk_ms=20, channel=0), sink,
                        on_error=sink.error).start()
    try:
        assert src.listening.wait(5)
        pcm = encode_s16le(np.stack([speech16, -speech16], axis=1).reshape(-1))

        async def client() -> None:  # no audio-start: the chunk's own format is used
            async with AsyncTcpClient("127.0.0.1", src.bound_port) as c:
                for i in range(0, len(pcm), 2560):
                    await c.write_event(AudioChunk(rate=16000, width=2, channels=2,
                                                   audio=pcm[i:i + 2560]).event())
                await c.write_event(AudioStop().event())
                await asyncio.sleep(0.3)

        asyncio.run(client())
    finally:
        src.stop()
    assert similarity(sink.audio(), speech16) > 0.99


class WyomingPeer:
    """A Wyoming peer on the wyoming package's own AsyncTcpServer/AsyncEventHandler, in a thread:
    a microphone service (streams to every client at once) or a satellite (answers describe as
    one and streams only after run-satellite). Its "microphone" is `audio` (this machine has no
    sound card), sent as 48 kHz stereo S16LE in real time, then silence until disconnected."""

    def __init__(self, audio16: np.ndarray, port: int = 0, satellite: bool = False) -> None:
        self.audio = resample(audio16, 16000, 48000)
        self.port, self.satellite = port, satellite
        self.clients = 0
        self.run_satellite = 0
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()))

    def __enter__(self) -> WyomingPeer:
        self._thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def _serve(self) -> None:
        from wyoming.audio import AudioChunk, AudioFormat, AudioStart
        from wyoming.info import Attribution, Describe, Info, MicProgram, Satellite
        from wyoming.satellite import RunSatellite
        from wyoming.server import AsyncEventHandler, AsyncTcpServer

        peer = self
        attribution = Attribution(name="test", url="")
        if self.satellite:
            info = Info(satellite=Satellite(name="kitchen satellite", attribution=attribution,
                                            installed=True, description="", version=None))
        else:
            info = Info(mic=[MicProgram(name="file mic", attribution=attribution, installed=True,
                                        description="", version=None,
                                        mic_format=AudioFormat(rate=48000, width=2, channels=2))])

        class Handler(AsyncEventHandler):
            def __init__(self, reader, writer) -> None:
                super().__init__(reader, writer)
                peer.clients += 1
                self.streaming: asyncio.Task | None = None
                if not peer.satellite:
                    self.streaming = asyncio.create_task(self.stream())

            async def stream(self) -> None:
                await self.write_event(AudioStart(rate=48000, width=2, channels=2).event())
                pcm = encode_s16le(np.stack([peer.audio, peer.audio], axis=1).reshape(-1))
                step = 960 * 4  # 20 ms of 48 kHz stereo, in real time
                t0, k = time.monotonic(), 0
                while True:
                    for i in range(0, len(pcm), step):
                        await self.write_event(AudioChunk(rate=48000, width=2, channels=2,
                                                          audio=pcm[i:i + step]).event())
                        k += 1
                        await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
                    pcm = bytes(step * 10)  # then silence

            async def handle_event(self, event) -> bool:
                if Describe.is_type(event.type):
                    await self.write_event(info.event())
                elif RunSatellite.is_type(event.type) and self.streaming is None:
                    peer.run_satellite += 1
                    self.streaming = asyncio.create_task(self.stream())
                return True

            async def disconnect(self) -> None:
                if self.streaming is not None:
                    self.streaming.cancel()

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = AsyncTcpServer("127.0.0.1", self.port)
        await server.start(Handler)
        self.port = server._server.sockets[0].getsockname()[1]
        self.ready.set()
        await self._stop.wait()
        await server.stop()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(predicate())


@pytest.mark.parametrize("satellite", [False, True], ids=["microphone", "satellite"])
def test_wyoming_client_streams_a_peer_and_reconnects_with_backoff(speech16, satellite):
    sink = Sink()
    with WyomingPeer(speech16, satellite=satellite) as peer:
        port = peer.port
        src = WyomingClientSource(f"tcp://127.0.0.1:{port}", OutputConfig(chunk_ms=20), sink,
                                  retry_initial=0.05, retry_max=0.2, on_error=sink.error,
                                  on_client=sink.error).start()
        try:
            assert wait_for(lambda: sink.audio().size >= speech16.size)
            assert src.peer_kind == ("satellite" if satellite else "mic")
            assert peer.run_satellite == (1 if satellite else 0)
            assert similarity(sink.audio()[:speech16.size], speech16) > 0.98
        except BaseException:
            src.stop()
            raise
    try:
        # The peer is gone: reconnect attempts with a doubling delay, capped at retry_max.
        assert wait_for(lambda: len(src.retry_delays) >= 4)
        assert src.retry_delays[:4] == [0.05, 0.1, 0.2, 0.2]
        assert any("connection closed by the peer" in e for e in sink.errors)
        assert any("cannot connect" in e for e in sink.errors)
        before = sink.audio().size
        with WyomingPeer(speech16, port=port, satellite=satellite) as peer2:
            assert wait_for(lambda: src.connections == 2 and sink.audio().size
                            >= before + speech16.size)
            assert peer2.clients == 1
    finally:
        src.stop()
    assert not src.running
    assert (np.diff(np.array(sink.stamps)) > 0).all()


def test_wyoming_client_rejects_a_bad_uri_or_mode():
    for uri in ("127.0.0.1:10700", "http://host:1", "tcp://host"):
        with pytest.raises(ValueError, match="uri"):
            WyomingClientSource(uri, OutputConfig(), lambda c, s: None)
    with pytest.raises(ValueError, match="mode"):
        WyomingClientSource("tcp://h:1", OutputConfig(), lambda c, s: None, mode="speaker")


def test_wyoming_client_gives_up_on_a_peer_that_never_answers():
    """A TCP server that accepts and says nothing (not a Wyoming peer): no answer to describe
    within connect_timeout, then retried."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    sink = Sink()
    src = WyomingClientSource(f"tcp://127.0.0.1:{srv.getsockname()[1]}", OutputConfig(), sink,
                              retry_initial=0.05, connect_timeout=0.3,
                              on_error=sink.error).start()
    try:
        assert wait_for(lambda: len(src.retry_delays) >= 2)
    finally:
        src.stop()
        srv.close()
    assert "no answer to describe within 0.3 s" in sink.errors[0]
    assert src.connections == 0 and not sink.chunks
