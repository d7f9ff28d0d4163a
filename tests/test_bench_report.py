"""benchmarks/compare/report.py turns a results file into docs/benchmarks.md: its sums and its notes.

The report is what users read to choose pinkrelay; a ratio computed the
wrong way round or a note that hides an unclean row would mislead them. The
fixture is a small results file in the format bench_compare.py writes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "compare" / "report.py")
report = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(report)


def _point(system, n, rep, cpu, gbps, *, load=0.1, subs=0.1, other=0.0, bound=False):
    return {
        "system": system, "n": n, "rep": rep, "delivered_gbps": gbps, "relay_cpu_fraction": cpu,
        "cpu_s_per_gbit": cpu / gbps, "relay_and_subscribers_cpu_s_per_gbit": (cpu + subs) / gbps,
        "subscribers_cpu_fraction": subs, "peak_rss_mb": 30.0, "load_core_busy": load, "load_cpu_fraction": load,
        "min_keep_up": 1.0, "relay_core_other": other, "load_core_other": 0.0, "all_kept_up": True,
        "generator_bound": bound, "ingest_mbps": 2.0, "setup_s": 1.0,
        **({"video_latency_ms": {"n": 10, "p50": 1.0, "p99": 2.0},
            "audio_latency_ms": {"n": 10, "p50": 20.0, "p99": 35.0}} if system == "pinkrelay" else {}),
    }


def _fixture():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks" / "compare"))
    from bench_compare import summarize_fanout

    points = [
        _point("pinkrelay", 800, 0, 0.16, 1.6, subs=0.10), _point("nginx-rtmp", 800, 0, 0.15, 1.6, subs=0.22),
        _point("pinkrelay", 800, 1, 0.18, 1.6, subs=0.10), _point("nginx-rtmp", 800, 1, 0.13, 1.6, subs=0.22),
        _point("pinkrelay", 10, 0, 0.02, 0.02, other=0.5), _point("nginx-rtmp", 10, 0, 0.005, 0.02, bound=True),
    ]
    return {
        "fanout": {"points": points, "summary": summarize_fanout(points)},
        "alerts": {"runs": []},
        "settings": {"duration": 5, "warmup": 2, "reps": 2},
        "clip": {"messages_per_s": 77},
        "limits": {"loopback_nagle": [
            {"way": "chunked", "n": 800, "sender_cpu_fraction": 0.15, "reader_cpu_fraction": 0.22},
            {"way": "one-write", "n": 800, "sender_cpu_fraction": 0.12, "reader_cpu_fraction": 0.13}],
            "loopback_nagle_command": "loopback_nagle.py --n 800"},
    }


def test_ratios_are_pinkrelay_over_nginx_from_medians_of_the_runs():
    rows = {(r["system"], r["n"]): r for r in _fixture()["fanout"]["summary"]}
    pr, ng = rows[("pinkrelay", 800)], rows[("nginx-rtmp", 800)]
    assert pr["cpu_s_per_gbit"] == (0.16 / 1.6 + 0.18 / 1.6) / 2
    assert pr["ratio_vs_nginx"] == pr["cpu_s_per_gbit"] / ng["cpu_s_per_gbit"]
    assert pr["ratio_vs_nginx"] > 1  # pinkrelay dearer on relay CPU in this fixture...
    assert pr["total_ratio_vs_nginx"] < 1  # ...cheaper for the machine as a whole
    assert "ratio_vs_nginx" not in ng
    headline = "\n".join(report.headline(_fixture()))
    assert f"N=800: **{pr['ratio_vs_nginx']:.2f}×**" in headline
    assert f"N=800: **{pr['total_ratio_vs_nginx']:.2f}×**" in headline


def test_unclean_rows_and_the_generator_limit_are_named():
    fixture = _fixture()
    table = "\n".join(report.fanout_section(fixture))
    row = next(line for line in table.splitlines() if line.startswith("| 10 | pinkrelay |"))
    assert "other jobs ~50 % of core 0" in row
    nginx_row = next(line for line in table.splitlines() if line.startswith("| 10 | nginx-rtmp |"))
    assert "limited by the load generator" in nginx_row
    notes = "\n".join(report.notes(fixture))
    assert "Rows limited by the load generator" in notes and "nginx-rtmp N=10" in notes
    assert "pinkrelay N=10 rep 0" in notes  # disturbed by other jobs
    assert "sender 15 % of a core and the reader 22 %" in notes  # the Nagle demonstration, from the file
    assert "1 / 2.00" not in table and "1.00 / 2.00" in table  # video latency p50 / p99
