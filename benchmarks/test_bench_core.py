"""Micro-benchmarks of the core, each over both cores (``make bench``).

The workloads are the ones of ``core_throughput.py`` (read its docstring).
After the pytest-benchmark table, ``conftest.py`` prints one line per case
with frames/s and GB/s from the median round, the compiled/reference ratio,
and whether the issue's decode targets are met (small frames: >= 1,000,000
frames/s and >= 20x the reference).
"""

from __future__ import annotations

import core_throughput as workloads
import pytest

CASES = {case.name: case for case in workloads.all_cases()}
MODULES = [
    pytest.param(name, id=name)
    if workloads.MODULES[name] is not None
    else pytest.param(name, id=name, marks=pytest.mark.skip(reason="compiled core not built"))
    for name in ("reference", "compiled")
]


def _run(benchmark, record, case_name, module, rounds=None):
    case = CASES[case_name]
    run = case.make(workloads.MODULES[module])
    run()  # warm up, and the workload checks itself once
    fanout = getattr(run, "fanout", None)
    benchmark.group = case_name
    benchmark.extra_info.update(frames_per_round=case.frames, bytes_per_round=case.nbytes)
    if fanout is None:
        benchmark(run)
    else:
        # Drain every reader before each round (not timed), so no socket fills up.
        fanout.drain()
        benchmark.pedantic(run, setup=fanout.drain, rounds=rounds or 300, warmup_rounds=5)
        fanout.close()
    record(case, module, benchmark)


@pytest.mark.parametrize("module", MODULES)
def test_decode_realistic_mix(benchmark, record, module):
    """Video 2-60 KB in 16 KiB chunks, audio 100-300 B, heartbeats, alerts; 64 KiB reads."""
    _run(benchmark, record, "decode mix", module)


@pytest.mark.parametrize("module", MODULES)
def test_decode_small_frames(benchmark, record, module):
    """200-byte audio frames, 64 KiB reads: the per-frame cost."""
    _run(benchmark, record, "decode small", module)


@pytest.mark.parametrize("module", MODULES)
def test_encode_media_video(benchmark, record, module):
    _run(benchmark, record, "encode video 60KB", module)


@pytest.mark.parametrize("module", MODULES)
def test_encode_media_audio(benchmark, record, module):
    _run(benchmark, record, "encode audio 200B", module)


@pytest.mark.parametrize("module", MODULES)
def test_send_queue_cycle(benchmark, record, module):
    """push an alert, 5 audio frames and a 30 KB video frame; peek + consume until empty."""
    _run(benchmark, record, "queue cycle", module)


@pytest.mark.parametrize("module", MODULES)
def test_deliver_audio_to_100_queues(benchmark, record, module):
    _run(benchmark, record, "deliver audio x100", module)


@pytest.mark.parametrize("module", MODULES)
def test_deliver_video_to_100_queues(benchmark, record, module):
    _run(benchmark, record, "deliver video x100", module, rounds=150)
