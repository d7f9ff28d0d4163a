"""Tests for pinkrelay.media with real PyAV encoders, decoders and muxers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinkrelay.media import (
    AudioEncoder,
    CameraSource,
    CodecUnavailable,
    Decoder,
    EncodedPacket,
    FileSource,
    MediaError,
    Microphone,
    Recorder,
    SourceUnavailable,
    SyntheticSource,
    TestPatternSource,
    ToneSource,
    TrackInfo,
    VideoEncoder,
    encode_clip,
    h264,
    open_source,
)

WIDTH, HEIGHT, FPS = 160, 120, 30
SECONDS = 2
VIDEO_FRAMES = SECONDS * FPS
AUDIO_FRAMES = SECONDS * 50


@dataclass
class Encoded:
    video: list[EncodedPacket]
    audio: list[EncodedPacket]
    video_info: TrackInfo
    audio_info: TrackInfo


def encode_stream(audio_codec: str = "opus") -> Encoded:
    pattern = TestPatternSource(WIDTH, HEIGHT, FPS, "btn-0042", start_time=1_700_000_000.0)
    tone = ToneSource()
    video_encoder = VideoEncoder(WIDTH, HEIGHT, FPS, 300_000, gop_seconds=1.0)
    audio_encoder = AudioEncoder(audio_codec)
    video = [p for frame in itertools.islice(pattern, VIDEO_FRAMES) for p in video_encoder.encode(frame)]
    video += video_encoder.flush()
    audio = [p for frame in itertools.islice(tone, AUDIO_FRAMES) for p in audio_encoder.encode(frame)]
    audio += audio_encoder.flush()
    return Encoded(video, audio, video_encoder.track_info, audio_encoder.track_info)


@pytest.fixture(scope="module")
def stream() -> Encoded:
    return encode_stream("opus")


@pytest.fixture(scope="module")
def clip():
    return encode_clip(SECONDS, WIDTH, HEIGHT, FPS, 300_000, label="clip")


def decode_all(info: TrackInfo, packets: list[EncodedPacket]) -> tuple[Decoder, list]:
    decoder = Decoder(info)
    frames = [frame for packet in packets for frame in decoder.decode(packet)]
    frames += decoder.flush()
    return decoder, frames


def demux_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                counts[packet.stream.type] = counts.get(packet.stream.type, 0) + 1
    return counts


def decode_file(path: Path, kind: str) -> list:
    with av.open(str(path)) as container:
        return list(container.decode(**{kind: 0}))


# Encoding and decoding


def test_two_seconds_decode_back_to_every_frame(stream: Encoded) -> None:
    assert len(stream.video) == VIDEO_FRAMES
    decoder, frames = decode_all(stream.video_info, stream.video)
    assert decoder.decoded_frames == len(frames) == VIDEO_FRAMES
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
    assert [f.pts for f in frames] == [p.pts_us for p in stream.video]

    assert len(stream.audio) == AUDIO_FRAMES + 1
    decoder, frames = decode_all(stream.audio_info, stream.audio)
    assert decoder.decoded_frames == len(frames) == len(stream.audio)
    assert {f.sample_rate for f in frames} == {48000}
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert np.abs(samples[len(samples) // 2 :]).max() > 0.1


def test_packet_timestamps_are_microseconds_from_zero(stream: Encoded) -> None:
    assert [p.pts_us for p in stream.video] == [round(n * 1_000_000 / FPS) for n in range(VIDEO_FRAMES)]
    assert {p.duration_us for p in stream.video} == {33333}
    assert [p.pts_us for p in stream.audio] == [n * 20_000 for n in range(len(stream.audio))]
    assert {p.duration_us for p in stream.audio[:-1]} == {20_000}
    assert stream.audio[-1].duration_us == 6_500


def test_keyframes_follow_the_fixed_gop(stream: Encoded) -> None:
    keyframes = [i for i, p in enumerate(stream.video) if p.keyframe]
    assert keyframes == list(range(0, VIDEO_FRAMES, FPS))
    assert [h264.is_keyframe(p.data) for p in stream.video] == [p.keyframe for p in stream.video]


def test_every_keyframe_carries_sps_and_pps(stream: Encoded) -> None:
    extradata_sps, extradata_pps = h264.parameter_sets(stream.video_info.extradata)
    assert len(extradata_sps) == 1 and len(extradata_pps) == 1
    for packet in stream.video:
        sps, pps = h264.parameter_sets(packet.data)
        if packet.keyframe:
            assert (sps, pps) == (extradata_sps, extradata_pps)
        else:
            assert (sps, pps) == ([], [])


def test_each_keyframe_decodes_without_earlier_packets(stream: Encoded) -> None:
    for start in (i for i, p in enumerate(stream.video) if p.keyframe):
        bare_info = TrackInfo(kind="video", codec="h264", width=WIDTH, height=HEIGHT, fps=FPS)
        decoder, frames = decode_all(bare_info, stream.video[start:])
        assert decoder.decoded_frames == VIDEO_FRAMES - start
        assert frames[0].key_frame
        assert frames[0].pts == stream.video[start].pts_us


def test_decoder_joining_mid_gop_waits_for_the_next_keyframe(stream: Encoded) -> None:
    decoder = Decoder(stream.video_info)
    outputs = [len(decoder.decode(p.data, p.pts_us)) for p in stream.video[10:]]
    assert decoder.skipped_packets == FPS - 10
    assert outputs == [0] * (FPS - 10) + [1] * (VIDEO_FRAMES - FPS)


def test_force_keyframe_makes_the_next_frame_an_idr() -> None:
    pattern = TestPatternSource(WIDTH, HEIGHT, FPS, "k")
    encoder = VideoEncoder(WIDTH, HEIGHT, FPS, 300_000, gop_seconds=1.0)
    flags = []
    for n in range(40):
        if n == 7:
            encoder.force_keyframe()
        flags += [p.keyframe for p in encoder.encode(pattern.frame(n))]
    assert [i for i, key in enumerate(flags) if key] == [0, 7, 37]


def test_encoder_converts_frames_of_other_size_and_format() -> None:
    big = TestPatternSource(320, 240, FPS, "big").frame(0).reformat(format="rgb24")
    encoder = VideoEncoder(WIDTH, HEIGHT, FPS, 300_000)
    packets = encoder.encode(big) + encoder.flush()
    _, frames = decode_all(encoder.track_info, packets)
    assert [(f.width, f.height) for f in frames] == [(WIDTH, HEIGHT)]
    assert big.format.name == "rgb24" and big.pts == 0


def test_high_profile_stream_records_to_mp4(tmp_path: Path) -> None:
    pattern = TestPatternSource(WIDTH, HEIGHT, FPS, "hi")
    encoder = VideoEncoder(WIDTH, HEIGHT, FPS, 300_000, preset="veryfast")
    packets = [p for n in range(10) for p in encoder.encode(pattern.frame(n))] + encoder.flush()
    sps, _ = h264.parameter_sets(encoder.track_info.extradata)
    assert sps[0][1] == 100
    avcc = h264.annexb_to_avcc(encoder.track_info.extradata)
    assert avcc[-4:] == bytes((0xFD, 0xF8, 0xF8, 0))
    path = tmp_path / "high.mp4"
    with Recorder(path, [encoder.track_info]) as recorder:
        for packet in packets:
            recorder.write(0, packet)
    assert len(decode_file(path, "video")) == 10


def test_aac_encodes_and_decodes() -> None:
    encoded = encode_stream("aac")
    info = encoded.audio_info
    assert info.codec == "aac"
    assert info.extradata[:2] == b"\x11\x88"
    assert all(p.keyframe for p in encoded.audio)
    assert [p.pts_us for p in encoded.audio[:3]] == [0, 21333, 42667]
    decoder, frames = decode_all(info, encoded.audio)
    assert len(frames) == len(encoded.audio) == -(-(SECONDS * 48000 + 1024) // 1024)
    assert sum(f.samples for f in frames) == len(frames) * 1024


def test_opus_extradata_is_opus_head(stream: Encoded) -> None:
    head = stream.audio_info.extradata
    assert head[:8] == b"OpusHead" and len(head) == 19 and head[9] == 1


def test_audio_encoder_reframes_odd_sized_input() -> None:
    encoder = AudioEncoder("opus", sample_rate=48000, channels=2)
    packets = []
    for n in range(10):
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 700), dtype=np.float32), format="fltp", layout="stereo")
        frame.sample_rate = 48000
        packets += encoder.encode(frame)
    packets += encoder.flush()
    assert len(packets) == -(-(7000 + 312) // 960)
    assert [p.pts_us for p in packets] == [n * 20_000 for n in range(len(packets))]


def test_encoders_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="even"):
        VideoEncoder(161, 120, FPS, 300_000)
    with pytest.raises(ValueError, match="preset"):
        VideoEncoder(WIDTH, HEIGHT, FPS, 300_000, preset="placebo")
    with pytest.raises(ValueError, match="'mp3'"):
        AudioEncoder("mp3")
    with pytest.raises(ValueError, match="44100 Hz"):
        AudioEncoder("opus", sample_rate=44100)
    assert issubclass(CodecUnavailable, (MediaError, RuntimeError))


# Synthetic sources


def test_clock_changes_the_picture_but_the_label_stays() -> None:
    source = TestPatternSource(WIDTH, HEIGHT, FPS, "btn-7", start_time=1_700_000_000.0)
    first = source.frame(0).to_ndarray()[:HEIGHT]
    second = source.frame(1).to_ndarray()[:HEIGHT]
    assert source.clock_text(0) != source.clock_text(1)
    clock_rows = slice(HEIGHT - 10, HEIGHT)
    assert np.count_nonzero(first[clock_rows] != second[clock_rows]) > 5
    assert np.array_equal(first[:10], second[:10])
    other_label = TestPatternSource(WIDTH, HEIGHT, FPS, "btn-8", start_time=1_700_000_000.0)
    assert not np.array_equal(first[:10], other_label.frame(0).to_ndarray()[:10])


def test_moving_box_changes_the_picture() -> None:
    source = TestPatternSource(WIDTH, HEIGHT, FPS, "box", start_time=0.0)
    middle = slice(10, HEIGHT - 10)
    assert source.box_x(0) != source.box_x(5)
    a = source.frame(0).to_ndarray()[middle]
    b = source.frame(5).to_ndarray()[middle]
    assert np.count_nonzero(a != b) > 100


def test_pattern_frames_are_deterministic_in_any_order() -> None:
    source = TestPatternSource(WIDTH, HEIGHT, FPS, "det", start_time=1_700_000_000.0)
    forward = [source.frame(n).to_ndarray() for n in range(5)]
    backward = [source.frame(n).to_ndarray() for n in reversed(range(5))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward, strict=True))
    frame = source.frame(4)
    assert frame.pts == 4 and frame.time_base == Fraction(1, FPS) and frame.format.name == "yuv420p"


def test_pattern_iterates_with_increasing_pts() -> None:
    frames = list(itertools.islice(TestPatternSource(WIDTH, HEIGHT, FPS, "it"), 3))
    assert [f.pts for f in frames] == [0, 1, 2]


def test_tone_frames_are_20ms_continuous_and_deterministic() -> None:
    tone = ToneSource(48000, 1, 440.0)
    frames = list(itertools.islice(tone, 3))
    assert [(f.samples, f.pts, f.time_base) for f in frames] == [(960, n * 960, Fraction(1, 48000)) for n in range(3)]
    joined = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int32)
    assert np.abs(np.diff(joined)).max() < 32767 * 0.25 * 2 * np.pi * 440 / 48000 * 1.1
    assert np.array_equal(tone.frame(1).to_ndarray(), frames[1].to_ndarray())
    stereo = ToneSource(16000, 2).frame(0)
    assert (stereo.samples, stereo.layout.name) == (320, "stereo")


def test_synthetic_source_from_spec() -> None:
    source = open_source("test", width=WIDTH, height=HEIGHT, fps=FPS, label="sim")
    assert isinstance(source, SyntheticSource)
    video = next(source.video_frames())
    audio = next(source.audio_frames())
    assert (video.width, video.height) == (WIDTH, HEIGHT)
    assert audio.samples == 960 and source.sample_rate == 48000


# Recording


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_recorder_writes_a_playable_file(tmp_path: Path, clip, suffix: str) -> None:
    path = tmp_path / f"alert{suffix}"
    with Recorder(path, [clip.video, clip.audio]) as recorder:
        for packet in clip.packets:
            recorder.write(0 if packet.kind == "video" else 1, packet)
    video_count = sum(p.kind == "video" for p in clip.packets)
    audio_count = len(clip.packets) - video_count
    assert recorder.dropped_packets == 0
    assert recorder.packets_written == [video_count, audio_count]
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "opus")
        assert (video.codec_context.width, video.codec_context.height) == (WIDTH, HEIGHT)
        assert audio.codec_context.sample_rate == 48000
    assert demux_counts(path) == {"video": video_count, "audio": audio_count}
    frames = decode_file(path, "video")
    assert len(frames) == VIDEO_FRAMES
    assert frames[0].key_frame
    assert len(decode_file(path, "audio")) == audio_count


def test_recorder_stores_avcc_and_length_prefixed_samples(tmp_path: Path, clip) -> None:
    path = tmp_path / "avcc.mp4"
    with Recorder(path, [clip.video]) as recorder:
        for packet in clip.packets:
            if packet.kind == "video":
                recorder.write(0, packet)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        sps, pps, length_size = h264.parse_avcc(stream.codec_context.extradata)
        assert h264.join_annexb(sps + pps) == clip.video.extradata
        first = next(container.demux(stream))
        assert h264.to_annexb(bytes(first), length_size) == h264.join_annexb(h264.split_nal_units(clip.packets[0].data))


def test_recorder_starts_at_a_keyframe_and_at_time_zero(tmp_path: Path, stream: Encoded) -> None:
    path = tmp_path / "late.mkv"
    info = TrackInfo(kind="video", codec="h264", width=WIDTH, height=HEIGHT, fps=FPS)
    with Recorder(path, [info, stream.audio_info]) as recorder:
        for packet in stream.audio[:60]:
            recorder.write(1, packet)
        for packet in stream.video[5:]:
            recorder.write(0, packet)
        for packet in stream.audio[60:]:
            recorder.write(1, packet)
    later_audio = sum(p.pts_us >= stream.video[FPS].pts_us for p in stream.audio)
    assert recorder.packets_written == [VIDEO_FRAMES - FPS, later_audio]
    assert recorder.dropped_packets == (FPS - 5) + (len(stream.audio) - later_audio)
    frames = decode_file(path, "video")
    assert len(frames) == VIDEO_FRAMES - FPS
    assert frames[0].key_frame and frames[0].time == 0


def test_recorder_with_aac(tmp_path: Path) -> None:
    encoded = encode_stream("aac")
    path = tmp_path / "aac.mp4"
    with Recorder(path, [encoded.video_info, encoded.audio_info]) as recorder:
        packets = sorted(
            [(p.pts_us, 0, p) for p in encoded.video] + [(p.pts_us, 1, p) for p in encoded.audio],
            key=lambda item: item[:2],
        )
        for _, index, packet in packets:
            recorder.write(index, packet)
    assert demux_counts(path) == {"video": VIDEO_FRAMES, "audio": len(encoded.audio)}
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
    assert len(decode_file(path, "audio")) == len(encoded.audio)


def test_recorder_rejects_misuse(tmp_path: Path, stream: Encoded) -> None:
    with pytest.raises(ValueError, match=r"\.avi"):
        Recorder(tmp_path / "x.avi", [stream.video_info])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Recorder(tmp_path / "missing" / "x.mp4", [stream.video_info])
    recorder = Recorder(tmp_path / "x.mkv", [stream.video_info])
    with pytest.raises(ValueError, match="audio packet written to video track 0"):
        recorder.write(0, stream.audio[0])
    with pytest.raises(IndexError, match="track index 3"):
        recorder.write(3, stream.video[0])
    recorder.close()
    with pytest.raises(MediaError, match="closed"):
        recorder.write(0, stream.video[0])


# Clips


def test_clip_starts_with_a_keyframe_in_pts_order(clip) -> None:
    assert clip.packets[0].kind == "video" and clip.packets[0].keyframe
    assert clip.duration_us == SECONDS * 1_000_000
    pts = [p.pts_us for p in clip.packets]
    assert pts == sorted(pts)
    assert sum(p.kind == "video" for p in clip.packets) == VIDEO_FRAMES
    assert all(p.pts_us < clip.duration_us for p in clip.packets)
    assert clip.video.extradata and clip.audio.extradata


def test_clip_replay_loops_with_monotonic_time(clip) -> None:
    start = 5_000_000
    count = len(clip.packets)
    replayed = list(itertools.islice(clip.replay(start), 3 * count))
    for kind in ("video", "audio"):
        pts = [p.pts_us for p in replayed if p.kind == kind]
        assert all(b > a for a, b in itertools.pairwise(pts)), kind
    overall = [p.pts_us for p in replayed]
    assert overall == sorted(overall)
    for loop in range(3):
        first = replayed[loop * count]
        assert first.keyframe and first.kind == "video"
        assert first.pts_us == start + loop * clip.duration_us
        assert first.data is clip.packets[0].data

    decoder, frames = decode_all(clip.video, [p for p in replayed if p.kind == "video"])
    assert decoder.decoded_frames == 3 * VIDEO_FRAMES
    assert [f.pts for f in frames][VIDEO_FRAMES] == start + clip.duration_us


# Files and devices


def test_file_source_reads_a_recording(tmp_path: Path, clip) -> None:
    path = tmp_path / "replay.mp4"
    with Recorder(path, [clip.video, clip.audio]) as recorder:
        for packet in clip.packets:
            recorder.write(0 if packet.kind == "video" else 1, packet)
    source = open_source(str(path))
    assert isinstance(source, FileSource)
    assert (source.width, source.height, source.fps) == (WIDTH, HEIGHT, FPS)
    assert (source.sample_rate, source.channels) == (48000, 1)
    frames = list(source.video_frames())
    assert len(frames) == VIDEO_FRAMES
    assert sum(1 for _ in source.audio_frames()) > 0

    looping = FileSource(path, loop=True)
    times = [f.time for f in itertools.islice(looping.video_frames(), VIDEO_FRAMES + 3)]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[VIDEO_FRAMES] == pytest.approx(SECONDS, abs=1e-3)

    encoder = VideoEncoder(WIDTH // 2, HEIGHT // 2, FPS, 100_000)
    packets = [p for frame in frames[:5] for p in encoder.encode(frame)]
    assert [p.pts_us for p in packets] == [round(f.time * 1_000_000) for f in frames[:5]]


def test_open_source_reports_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(SourceUnavailable, match="nope.mp4 not found") as caught:
        open_source(str(path))
    assert isinstance(caught.value, OSError)


def test_open_source_reports_non_media_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(SourceUnavailable, match="notes.mp4 cannot be read as audio/video"):
        open_source(path)


def test_open_source_reports_file_without_video(tmp_path: Path, stream: Encoded) -> None:
    path = tmp_path / "voice.mkv"
    with Recorder(path, [stream.audio_info]) as recorder:
        for packet in stream.audio:
            recorder.write(0, packet)
    with pytest.raises(SourceUnavailable, match="voice.mkv has no video stream"):
        open_source(path)


def test_a_device_that_is_no_camera_reaches_v4l2_and_is_named() -> None:
    """The V4L2 input is found (PyAV lists it as 'video4linux2,v4l2') and asked to open the device."""
    with pytest.raises(SourceUnavailable, match=r"camera /dev/null cannot be opened \(") as caught:
        CameraSource("/dev/null")
    assert "no V4L2 input" not in str(caught.value)


def test_open_source_reports_missing_camera() -> None:
    with pytest.raises(SourceUnavailable, match=r"camera /dev/video97 not found; connect"):
        open_source("/dev/video97")


def test_missing_microphone_is_reported() -> None:
    with pytest.raises(SourceUnavailable, match="microphone 'pinkrelay-no-such-pcm'"):
        Microphone("pinkrelay-no-such-pcm")


# Value types and H.264 helpers


def test_track_info_round_trips_through_msgpack(stream: Encoded) -> None:
    for info in (stream.video_info, stream.audio_info):
        wire = msgpack.packb(info.to_dict(), use_bin_type=True)
        assert TrackInfo.from_dict(msgpack.unpackb(wire, raw=False)) == info
    assert TrackInfo.from_dict({"kind": "video", "codec": "h264", "fps": 25, "future": 1}).fps == 25.0


def test_track_info_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="'vp8'"):
        TrackInfo(kind="video", codec="vp8")
    with pytest.raises(ValueError, match="'opus' is not supported"):
        TrackInfo(kind="video", codec="opus")
    with pytest.raises(ValueError, match="'width' must be int"):
        TrackInfo.from_dict({"kind": "video", "codec": "h264", "width": "640"})
    with pytest.raises(ValueError, match="'codec'"):
        TrackInfo.from_dict({"kind": "audio"})


def test_nal_splitting_accepts_both_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x67\x42\x00" + b"\x00\x00\x01\x68\xce" + b"\x00\x00\x00\x00\x01\x65\x88\x80"
    assert h264.split_nal_units(data) == [b"\x67\x42", b"\x68\xce", b"\x65\x88\x80"]
    assert [h264.nal_type(n) for n in h264.split_nal_units(data)] == [7, 8, 5]
    assert h264.is_keyframe(data)
    assert not h264.is_keyframe(b"\x00\x00\x01\x41\x9a")
    assert h264.split_nal_units(b"\x67\x42") == []
    assert h264.parameter_sets(data) == ([b"\x67\x42"], [b"\x68\xce"])


nal_units = st.binary(min_size=1, max_size=40).filter(
    lambda unit: b"\x00\x00" not in unit and unit[0] != 0 and unit[-1] != 0
)


@settings(max_examples=60, deadline=None)
@given(st.lists(nal_units, min_size=1, max_size=6))
def test_annexb_and_length_prefixed_round_trip(units: list[bytes]) -> None:
    annexb = h264.join_annexb(units)
    assert h264.split_nal_units(annexb) == units
    assert h264.to_annexb(h264.to_length_prefixed(annexb)) == annexb
    assert h264.to_annexb(h264.to_length_prefixed(annexb, 2), 2) == annexb


def test_avcc_round_trip(stream: Encoded) -> None:
    record = h264.annexb_to_avcc(stream.video_info.extradata)
    assert record[0] == 1 and record[4] == 0xFF
    assert h264.avcc_to_annexb(record) == stream.video_info.extradata
    with pytest.raises(ValueError, match="not an avcC record"):
        h264.parse_avcc(stream.video_info.extradata)
    with pytest.raises(ValueError, match="overruns"):
        h264.to_annexb(b"\x00\x00\x00\x09abc")
