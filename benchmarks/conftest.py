"""Summary lines for the core benchmarks: frames/s, GB/s and compiled/reference."""

from __future__ import annotations

import core_throughput as workloads
import pytest

_RESULTS: dict[str, dict[str, float]] = {}  # case name -> module -> median seconds per round
_CASES: dict[str, workloads.Case] = {}


@pytest.fixture
def record():
    """Remember a finished benchmark's median round for the summary."""

    def record(case, module, benchmark):
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # benchmarks disabled (--benchmark-disable): nothing was timed
            return
        _CASES[case.name] = case
        _RESULTS.setdefault(case.name, {})[module] = stats.stats.median

    return record


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("pinkrelay core throughput (median round)")
    for name, medians in _RESULTS.items():
        case = _CASES[name]
        for module in ("reference", "compiled"):
            if module in medians:
                write(workloads.summary_line(case, module, medians[module]))
        line = workloads.ratio_line(case, medians)
        if line:
            write(line)
    for line in workloads.target_lines(_RESULTS, _CASES):
        write(line)
