"""Durable alerts per second and record() latency of the SQLite journal (``make bench``).

The workloads are those of ``journal_throughput.py`` (read its docstring):
N concurrent writers recording alerts flat out (closed loop), and alerts
arriving at 5,000/s whatever the journal does (open loop), all at
synchronous=FULL on the filesystem of the temporary directory. Each round is
one whole run on a fresh journal; the alerts/s and latency percentiles of
the median round are in ``extra_info`` and printed after this module's
benchmarks, with whether the target (>= 5,000 alerts/s, p99 <= 10 ms) is met.
"""

from __future__ import annotations

import journal_throughput as workloads
import pytest

_LINES: list[str] = []


class _Summary:
    """Prints the figures after pytest-benchmark's tables (a plugin, since hooks in test modules are ignored)."""

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        if _LINES:
            terminalreporter.section("pinkrelay journal, synchronous=FULL (median round)")
            for line in _LINES:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    if not request.config.pluginmanager.has_plugin("pinkrelay-journal-summary"):
        request.config.pluginmanager.register(_Summary(), "pinkrelay-journal-summary")
    yield


def _record(benchmark, results, check_target):
    median = sorted(results, key=lambda r: r.p99_ms)[len(results) // 2]
    benchmark.extra_info.update(
        alerts=median.alerts,
        alerts_per_second=round(median.rate),
        p50_ms=round(median.p50_ms, 3),
        p99_ms=round(median.p99_ms, 3),
        max_ms=round(median.max_ms, 3),
        alerts_per_commit=round(median.alerts / max(1, median.commits), 1),
    )
    _LINES.append(median.line())
    if check_target:
        _LINES.append("  " + workloads.target_line(median))


@pytest.mark.parametrize("writers", [1, 10, 100])
def test_journal_record_closed_loop(benchmark, tmp_path, writers):
    alerts = 1_000 if writers == 1 else 10_000
    results = []
    benchmark.group = "journal record(), N writers flat out"
    benchmark.pedantic(lambda: results.append(workloads.run_closed(tmp_path, writers, alerts)),
                       rounds=3, iterations=1, warmup_rounds=0)
    assert all(r.alerts == alerts // writers * writers for r in results)
    _record(benchmark, results, check_target=writers > 1)


def test_journal_record_open_loop_5000_per_second(benchmark, tmp_path):
    results = []
    benchmark.group = "journal record(), 5,000 alerts/s offered"
    benchmark.pedantic(lambda: results.append(workloads.run_open(tmp_path, workloads.TARGET_RATE, 3.0)),
                       rounds=3, iterations=1, warmup_rounds=0)
    assert all(r.alerts == int(workloads.TARGET_RATE * 3.0) for r in results)
    _record(benchmark, results, check_target=True)
