#!/usr/bin/env python3
"""Turn a ``benchmarks/results/compare-*.json`` into ``docs/benchmarks.md`` and its PNG plots.

``bench_compare.py`` calls this at the end of every run; by hand::

    .venv/bin/python benchmarks/compare/report.py [benchmarks/results/compare-<stamp>.json]

(default: the newest compare file). Nothing here measures anything.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DOCS = ROOT / "docs"
CPU_PLOT = DOCS / "benchmarks-cpu-per-gbit.png"
ALERT_PLOT = DOCS / "benchmarks-alert-latency.png"
COLORS = {"pinkrelay": "#d6336c", "pinkrelay-disk": "#862e9c", "nginx-rtmp": "#1971c2", "mosquitto": "#2f9e44",
          "mosquitto-lean": "#66a80f"}
OTHER_LOAD = 0.20  # another job's CPU on the relay's core above this: the run was disturbed


def f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def spread(row: dict[str, Any], key: str, digits: int = 3) -> str:
    if row.get(key) is None:
        return "–"
    lo, hi = row.get(key + "_min"), row.get(key + "_max")
    if lo is None or hi is None or row.get("runs", 1) < 2:
        return f(row[key], digits)
    return f"{f(row[key], digits)} ({f(lo, digits)}–{f(hi, digits)})"


def run_notes(p: dict[str, Any]) -> list[str]:
    notes = []
    if p.get("error"):
        notes.append("FAILED: " + p["error"].splitlines()[0][:120])
        return notes
    if p.get("generator_bound"):
        notes.append(f"load processes at {pct(p.get('load_cpu_fraction'))} of core 1: limited by the load generator")
    if (p.get("relay_core_other") or 0) > OTHER_LOAD:
        notes.append(f"other jobs ~{pct(p['relay_core_other'])} of core 0")
    if (p.get("load_core_other") or 0) > OTHER_LOAD:
        notes.append(f"other jobs ~{pct(p['load_core_other'])} of core 1")
    if not p.get("all_kept_up", True):
        notes.append(f"{p.get('subscribers_behind', 0)} behind, {p.get('subscribers_closed', 0)} closed")
    if (p.get("relay_cpu_fraction") or 0) >= 0.9:
        notes.append("relay core saturated")
    return notes


# -- plots ----------------------------------------------------------------------------------


def plot_cpu(report: dict[str, Any]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["fanout"].get("summary") or []
    if not rows:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system in ("pinkrelay", "nginx-rtmp"):
        mine = sorted((r for r in rows if r["system"] == system and r.get("cpu_s_per_gbit")), key=lambda r: r["n"])
        if not mine:
            continue
        n = [r["n"] for r in mine]
        y = [r["cpu_s_per_gbit"] for r in mine]
        err = [[r["cpu_s_per_gbit"] - r["cpu_s_per_gbit_min"] for r in mine],
               [r["cpu_s_per_gbit_max"] - r["cpu_s_per_gbit"] for r in mine]]
        ax.errorbar(n, y, yerr=err, marker="o", capsize=3, label=f"{system}: relay", color=COLORS[system])
        total = [r.get("relay_and_subscribers_cpu_s_per_gbit") for r in mine]
        if all(total):
            ax.plot(n, total, marker="s", ls="--", alpha=0.7, color=COLORS[system],
                    label=f"{system}: relay + subscribers")
        frac = [100 * r["relay_cpu_fraction"] for r in mine]
        ax2.plot([r["delivered_gbps"] for r in mine], frac, marker="o", label=system, color=COLORS[system])
        for r, x_, y_ in zip(mine, [r["delivered_gbps"] for r in mine], frac):
            ax2.annotate(str(r["n"]), (x_, y_), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subscribers N (one 2 Mbit/s 720p30 stream)")
    ax.set_ylabel("CPU-seconds per delivered Gbit")
    ax.set_title("Fan-out cost (median, bars: min–max of runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax2.set_xlabel("delivered Gbit/s")
    ax2.set_ylabel("relay CPU, % of one core")
    ax2.set_title("Relay core use (labels: N)")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(CPU_PLOT, dpi=110)
    plt.close(fig)
    return CPU_PLOT


def plot_alerts(report: dict[str, Any]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in report["alerts"].get("runs", []) if "phases" in r]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, phase in zip(axes, ("quiet", "loaded")):
        seen = set()
        for r in runs:
            cdf = r["phases"][phase]["cdf_ms"]
            if not cdf:
                continue
            y = [i / (len(cdf) - 1) for i in range(len(cdf))]
            label = r["system"] if r["system"] not in seen else None
            seen.add(r["system"])
            ax.plot(cdf, y, color=COLORS.get(r["system"], "grey"), label=label, alpha=0.85)
        ax.set_xscale("log")
        ax.set_xlabel("alert latency, button to console (ms)")
        load = ""
        if phase == "loaded":
            mbs = [r["media_in_mbytes_per_s"] for r in runs]
            load = f", {min(mbs):.0f}–{max(mbs):.0f} MB/s media in"
        ax.set_title(f"{phase}{load}")
        ax.grid(True, which="both", alpha=0.3)
        ax.axhline(0.99, color="grey", lw=0.6, ls="--")
    axes[0].set_ylabel("fraction of deliveries (dashed: p99)")
    axes[1].legend(loc="lower right")
    fig.suptitle(f"Alert latency CDF: {runs[0]['alerts_per_phase']} alerts at {runs[0]['alert_rate']:g}/s to "
                 f"{runs[0]['consoles']} consoles")
    fig.tight_layout()
    fig.savefig(ALERT_PLOT, dpi=110)
    plt.close(fig)
    return ALERT_PLOT


# -- markdown ---------------------------------------------------------------------------------


def headline(report: dict[str, Any]) -> list[str]:
    out = []
    rows = report["fanout"].get("summary") or []
    ratios = [(r["n"], r["ratio_vs_nginx"]) for r in rows if r.get("ratio_vs_nginx")]
    if ratios:
        out.append("- **Fan-out: relay CPU per delivered Gbit, pinkrelay ÷ nginx-rtmp** (medians; below 1 = "
                   "pinkrelay cheaper): " + ", ".join(f"N={n}: **{x:.2f}×**" for n, x in ratios) + ".")
    totals = [(r["n"], r["total_ratio_vs_nginx"]) for r in rows if r.get("total_ratio_vs_nginx")]
    if totals:
        out.append("- **Relay + subscribers CPU per delivered Gbit, pinkrelay ÷ nginx-rtmp** (the machine's whole "
                   "cost of the fan-out; see the honest notes on how loopback TCP bills nginx-rtmp's sends to its "
                   "subscribers): " + ", ".join(f"N={n}: **{x:.2f}×**" for n, x in totals) + ".")
    runs = [r for r in report["alerts"].get("runs", []) if "phases" in r]

    def med(system: str, phase: str) -> float | None:
        values = [r["phases"][phase]["latency_ms"].get("p99") for r in runs if r["system"] == system]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    systems = [s for s in ("pinkrelay", "pinkrelay-disk", "mosquitto", "mosquitto-lean") if med(s, "quiet")]
    if systems:
        parts = [f"{s} {f(med(s, 'quiet'), 2)} / {f(med(s, 'loaded'), 2)} ms" for s in systems]
        out.append("- **Alert p99, quiet / loaded** (button → console, 4 consoles): " + "; ".join(parts) + ".")
    limits = report.get("limits") or {}
    if limits.get("iperf3_gbps"):
        best = max(rows, key=lambda r: r.get("delivered_gbps", 0), default=None)
        if best:
            out.append(
                f"- **The limit**: one loopback TCP stream carries {limits['iperf3_gbps']:.1f} Gbit/s (iperf3), memcpy "
                f"runs at {limits['memcpy_gbytes_per_s']:.1f} GB/s; the most delivered here was "
                f"{best['delivered_gbps']:.2f} Gbit/s ({best['system']}, N={best['n']}: the offered load, not a "
                f"ceiling), {100 * best['delivered_gbps'] / limits['iperf3_gbps']:.0f} % of one iperf3 stream.")
    return out


def fanout_section(report: dict[str, Any]) -> list[str]:
    fan = report["fanout"]
    rows = fan.get("summary") or []
    if not rows:
        return ["No fan-out runs in this report."]
    s = report["settings"]
    out = [
        f"One publisher, N subscribers, {s['duration']:g} s measured after {s['warmup']:g} s of warm-up, "
        f"{s['reps']} runs per point and system (fresh server each run, alternating which system goes first). "
        "Medians, with the min–max of the runs in brackets.",
        "",
        "| N | system | delivered Gbit/s | relay CPU (% of a core) | **CPU-s per Gbit** | pinkrelay ÷ nginx | "
        "relay + subscribers CPU-s per Gbit | ÷ nginx | all kept up (min %) | peak RSS MB | "
        "video latency p50 / p99 ms | audio p50 / p99 ms | load processes (max) | clean? |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        runs = [p for p in fan["points"] if p["system"] == r["system"] and p["n"] == r["n"] and "error" not in p]
        notes = sorted({note for p in runs for note in run_notes(p)})
        lat = {}
        for kind in ("video", "audio"):
            lat[kind] = "–"
            if r.get(f"{kind}_latency_p50_ms") is not None:
                lat[kind] = f"{r[f'{kind}_latency_p50_ms']:.2f} / {r[f'{kind}_latency_p99_ms']:.2f}"
        frac = f"{100 * r['relay_cpu_fraction']:.1f} ({100 * r['relay_cpu_fraction_min']:.1f}–" \
               f"{100 * r['relay_cpu_fraction_max']:.1f})"
        out.append(
            f"| {r['n']} | {r['system']} | {spread(r, 'delivered_gbps')} | {frac} | {spread(r, 'cpu_s_per_gbit')} | "
            f"{f(r.get('ratio_vs_nginx'), 2) + '×' if r.get('ratio_vs_nginx') else ''} | "
            f"{spread(r, 'relay_and_subscribers_cpu_s_per_gbit')} | "
            f"{f(r.get('total_ratio_vs_nginx'), 2) + '×' if r.get('total_ratio_vs_nginx') else ''} | "
            f"{f(r['all_kept_up'])} ({100 * r.get('min_keep_up_min', 0):.1f}) | {f(r.get('peak_rss_mb'), 1)} | "
            f"{lat['video']} | {lat['audio']} | "
            f"{pct(r.get('load_cpu_fraction_max'))} | {'; '.join(notes) if notes else 'yes'} |"
        )
    failed = [p for p in fan["points"] if "error" in p]
    if failed:
        out += ["", "Failed runs: " + "; ".join(f"{p['system']} N={p['n']} rep {p['rep']}: "
                                               f"{p['error'].splitlines()[0][:160]}" for p in failed)]
    out += ["", "<details><summary>Every run</summary>", "",
            "| system | N | rep | Gbit/s | relay CPU % | CPU-s/Gbit | subscribers CPU % | ingest Mbit/s | "
            "min keep-up % | RSS MB | video p50 / p99 ms | load processes % | core 1 busy % | core 0 not relay % | "
            "setup s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in fan["points"]:
        if "error" in p:
            out.append(f"| {p['system']} | {p['n']} | {p['rep']} | failed | | | | | | | | | | | |")
            continue
        lat = p.get("video_latency_ms") or {}
        out.append(
            f"| {p['system']} | {p['n']} | {p['rep']} | {p['delivered_gbps']:.3f} | {100 * p['relay_cpu_fraction']:.1f} | "
            f"{f(p['cpu_s_per_gbit'])} | {pct(p.get('subscribers_cpu_fraction'))} | {p['ingest_mbps']:.2f} | "
            f"{100 * (p['min_keep_up'] or 0):.1f} | {p['peak_rss_mb']} | "
            f"{(f(lat.get('p50'), 2) + ' / ' + f(lat.get('p99'), 2)) if lat.get('n') else '–'} | "
            f"{100 * p['load_cpu_fraction']:.0f} | {100 * (p['load_core_busy'] or 0):.0f} | "
            f"{100 * p['relay_core_other']:.0f} | {p.get('setup_s', '')} |"
        )
    out += ["", "</details>"]
    return out


def alerts_section(report: dict[str, Any]) -> list[str]:
    runs = report["alerts"].get("runs") or []
    if not runs:
        return ["No alert runs in this report."]
    ok = [r for r in runs if "phases" in r]
    first = ok[0] if ok else runs[0]
    out = [
        f"{first.get('alerts_per_phase')} alerts per phase at {first.get('alert_rate', 0):g}/s from "
        f"{first.get('alert_buttons')} buttons to {first.get('consoles')} consoles. First quiet (consoles connected "
        f"and subscribed, no media), then with {first.get('bulk_streams')} media streams (the same clip, video "
        f"padded ×{first.get('pad_factor')} with H.264 filler NAL units) pouring ≥ 50 MB/s into the same server and "
        "out to the same 4 consoles, after 3 s of warm-up. Latency = console receive time − the button's "
        "`pressed_at` stamp (same machine, same clock), every delivery counted (4 per alert).",
        "",
        "| system | phase | media in / out MB/s | delivered / expected | lost | dup | p50 ms | p90 | **p99** | "
        "p99.9 | max | loaded ÷ quiet p99 | server CPU | load processes | clean? |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        if "phases" not in r:
            out.append(f"| {r['system']} | failed: {r.get('error', '').splitlines()[0][:120] if r.get('error') else ''} "
                       "| | | | | | | | | | | | | |")
            continue
        for name in ("quiet", "loaded"):
            ph = r["phases"][name]
            lat = ph["latency_ms"]
            notes = []
            if (ph.get("load_cpu_fraction") or 0) >= 0.85:
                notes.append(f"load processes {pct(ph['load_cpu_fraction'])} of core 1: generator-bound")
            if (ph.get("relay_core_other") or 0) > OTHER_LOAD:
                notes.append(f"other jobs ~{pct(ph['relay_core_other'])} of core 0")
            if (ph.get("load_core_other") or 0) > OTHER_LOAD:
                notes.append(f"other jobs ~{pct(ph['load_core_other'])} of core 1")
            if name == "loaded" and r["media_in_mbytes_per_s"] < 50:
                notes.append(f"only {r['media_in_mbytes_per_s']:.1f} MB/s in")
            media = f"{r['media_in_mbytes_per_s']:.1f} / {r['media_out_mbytes_per_s']:.1f}" if name == "loaded" else "0"
            ratio = f(r.get("loaded_over_quiet_p99"), 2) + "×" if name == "loaded" and r.get("loaded_over_quiet_p99") else ""
            out.append(
                f"| {r['system']} | {name} | {media} | {ph['delivered']:,} / {ph['deliveries_expected']:,} | {ph['lost']} | "
                f"{r['duplicates'] if name == 'loaded' else ''} | {f(lat.get('p50'))} | {f(lat.get('p90'))} | "
                f"**{f(lat.get('p99'))}** | {f(lat.get('p999'))} | {f(lat.get('max'))} | {ratio} | "
                f"{pct(ph['server_cpu_fraction'])} | {pct(ph.get('load_cpu_fraction'))} | {'; '.join(notes) or 'yes'} |"
            )
    out += ["", "`dup` counts alert copies a console got twice (both phases). pinkrelay runs with "
            "`merge_window = 0` (every press is its own alert) and escalation off for the run "
            "(`escalation_levels = [86400]`), so that the consoles get exactly one `alert` frame per press."]
    return out


def machine_section(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    lim = report.get("limits") or {}
    return [
        f"- CPU: {m['cpu_model']}, {m['cores']} cores; {m['memory_mb'] // 1024} GiB; Linux {m['kernel']}; "
        f"Python {m['python']}",
        f"- pinkrelay {m['pinkrelay_commit']}{' (src/ modified)' if m.get('pinkrelay_src_dirty') else ''}, compiled core: "
        f"{m['pinkrelay_compiled_core']}; {m['nginx'].replace('nginx version: ', '')} + libnginx-mod-rtmp; "
        f"{m['mosquitto']}; {m['ffmpeg'].split(' Copyright')[0]}",
        f"- Load average when the run started: {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} "
        "(other sessions share this machine: see the 'other jobs' columns)",
        f"- Loopback TCP, one stream (`{lim.get('iperf3_command', 'iperf3')}`, server on core 0): "
        f"**{f(lim.get('iperf3_gbps'), 1)} Gbit/s**",
        f"- memcpy: **{f(lim.get('memcpy_gbytes_per_s'), 1)} GB/s** ({lim.get('memcpy_method', '')})",
    ]


def profile_section(report: dict[str, Any]) -> list[str]:
    prof = report.get("profile")
    if not prof or not prof.get("samples"):
        return []
    run = prof["run"]
    out = ["## Where pinkrelay's CPU goes (py-spy)", "",
           f"py-spy (`record --nonblocking --rate 200`, Python frames only) on the relay at N={prof['n']}: "
           f"{run['delivered_gbps']:.2f} Gbit/s, relay {100 * run['relay_cpu_fraction']:.0f} % of a core, "
           f"{run['cpu_s_per_gbit']:.3f} CPU-s/Gbit; {prof['samples']} samples. Kernel time (the sends themselves) "
           "shows up inside the Python function that made the system call.", "",
           "| self % | function | | inclusive % | function |", "|---:|---|---|---:|---|"]
    for (a, x), (b, y) in zip(prof["self_pct"], prof["inclusive_pct"]):
        out.append(f"| {x} | `{a}` | | {y} | `{b}` |")
    return out + [""]


def write_report(path: Path) -> list[Path]:
    report = json.loads(Path(path).read_text())
    DOCS.mkdir(exist_ok=True)
    written = []
    for plot in (plot_cpu, plot_alerts):
        try:
            result = plot(report)
        except ImportError as error:
            print(f"report: no plot ({error}); pip install matplotlib", file=sys.stderr)
            result = None
        if result:
            written.append(result)
    rel = Path(path).resolve().relative_to(ROOT)
    clip = report.get("clip", {})
    s = report["settings"]
    lines = [
        "# Benchmarks: pinkrelay beside nginx-rtmp and mosquitto",
        "",
        f"Generated by `{report['command']}` ({report['mode']} mode) on {report['started']} in "
        f"{report.get('elapsed_s', 0):.0f} s, from [`{rel}`](../{rel}). Do not edit: rerun the command.",
        "",
        "## Headline",
        "",
        *headline(report),
        "",
        "## Machine and the limit",
        "",
        *machine_section(report),
        "",
        "## 1. Fan-out: one stream to N subscribers",
        "",
        "![CPU per Gbit against N](benchmarks-cpu-per-gbit.png)" if CPU_PLOT in written else "",
        "",
        *fanout_section(report),
        "",
        "## 2. Alerts under load",
        "",
        "![alert latency CDFs](benchmarks-alert-latency.png)" if ALERT_PLOT in written else "",
        "",
        *alerts_section(report),
        "",
        *profile_section(report),
        *talkback_section(),
        *evidence_section(),
        "## How it was measured",
        "",
        "- **Command**: `make bench-compare` (full) or `make bench-compare QUICK=1`; it installs what it needs "
        "(`scripts/install-bench-deps.sh`: Debian's nginx, libnginx-mod-rtmp, mosquitto, iperf3, ffmpeg, only when "
        "missing; `pip install -e '.[bench]'`: matplotlib, paho-mqtt, py-spy) and runs "
        f"`{' '.join(report.get('argv', []))}`. Bounded by `--budget` ({s.get('budget', 600):g} s); every server "
        "and load process is started by the script and stopped by its PID, also on ^C or SIGTERM.",
        f"- **Clip**: `{clip.get('command', '')}` - {clip.get('seconds', 0):g} s looped, "
        f"{clip.get('bits_per_s', 0) / 1e6:.2f} Mbit/s, {clip.get('messages_per_s', 0):.0f} messages/s (30 video "
        "frames, about 47 AAC frames). Both relays carry exactly these packets: pinkrelay's button demuxes the FLV "
        "with PyAV and sends each packet as one media message with a fresh capture timestamp; nginx-rtmp gets "
        "`ffmpeg -re -stream_loop -1 -i clip.flv -c copy -f flv rtmp://127.0.0.1:PORT/live/stream`.",
        "- **Servers**, each on 127.0.0.1 with a config generated into a temp dir, pinned with `taskset -c 0`"
        + (f" and run SCHED_FIFO {s['server_rt']} (`chrt`, so other jobs on this shared machine do not preempt them)"
           if s.get("server_rt") else "")
        + ": `python -m pinkrelay serve --no-web --config relay.toml --registry registry.csv` (console tokens in "
        "the config; data dir on /dev/shm for fan-out); `nginx -c nginx.conf` from "
        "[`nginx.conf.in`](../benchmarks/compare/nginx.conf.in) (one worker, `chunk_size 4096; live on; "
        "wait_key on;`, pings off); `mosquitto -c mosquitto.conf` from "
        "[`mosquitto.conf.in`](../benchmarks/compare/mosquitto.conf.in) (persistence off, as shipped).",
        "- **Load** on core 1 (`taskset -c 1`): subscribers are one process holding all N connections on one "
        "epoll, reading each ready socket with `recv_into` into one buffer at most every "
        f"{1000 * s.get('period', 0.01):g} ms and counting bytes after setup - for nginx-rtmp a minimal RTMP "
        "play client ([`rtmp_play.py`](../benchmarks/compare/rtmp_play.py): handshake, AMF0 connect, "
        "createStream, play, pipelined), for pinkrelay a stripped console (sans-IO `ConsoleConnection` for the "
        "handshake and `subscribe`, then bytes only). pinkrelay also gets a probe console (SCHED_FIFO) that "
        "decodes every frame: latency = receive time − the timestamp the button stamped just before its send "
        "(button → relay → console, both loopback hops and the relay's fan-out to the N others).",
        "- **Figures**: relay CPU = utime + stime of the server's processes (nginx: master + worker) from "
        "`/proc/PID/stat` over the window, kernel time included; delivered = bytes read by all subscribers in "
        "the window; kept up = every subscriber read ≥ 99 % of the bytes the publisher sent in the same window "
        "(pinkrelay: counted by the button; nginx: ffmpeg's `bytes_sent` from `ss -ti`); peak RSS = `VmHWM` "
        "(nginx: master + worker); load core = busy share of core 1 from /proc/stat (≥ 90 %: the row measures "
        "the generator, not the relay); other jobs = busy share of core 0 not used by the server.",
        "- **Alerts**: buttons are sans-IO `ButtonConnection`s (pinkrelay) or paho-mqtt clients publishing QoS 1 "
        "(mosquitto), stamping `pressed_at` (µs) just before the send; the bulk load is the same padded clip on "
        "25 streams, sent by pinkrelay buttons or by a bare MQTT publisher (QoS 0, topic `bulk/<i>`); consoles are "
        "pinkrelay consoles subscribed to every stream, or MQTT subscribers of `alerts` (QoS 1) and `bulk/#` "
        "(QoS 0): paho-mqtt clients (`mosquitto`) and, because paho's byte-at-a-time reads make the client a "
        "bottleneck at 200 MB/s, a minimal raw-socket MQTT subscriber that PUBACKs alerts and skips bulk payloads "
        "unread (`mosquitto-lean`). Alert buttons and consoles run SCHED_FIFO on core 1. "
        "`pinkrelay` keeps its journal on tmpfs (like mosquitto, which keeps nothing on disk); `pinkrelay-disk` "
        "keeps it on the disk, so every alert is fsync'd before it is forwarded (`synchronous=FULL`).",
        "- **The limit**: `iperf3 -c 127.0.0.1 -t 3` (one stream; server on core 0, client on core 1) and "
        "`numpy.copyto` of 256 MiB.",
        "",
        "## Honest notes",
        "",
        *notes(report),
        "",
    ]
    out = DOCS / "benchmarks.md"
    out.write_text("\n".join(lines))
    written.append(out)
    return written


def talkback_section() -> list[str]:
    """§3 from the newest ``benchmarks/results/talkback-*.json`` (benchmarks/talkback_latency.py), if any."""
    files = sorted((ROOT / "benchmarks" / "results").glob("talkback-*.json"))
    if not files:
        return []
    data = json.loads(files[-1].read_text())
    rel = files[-1].relative_to(ROOT)
    rows = [("mouth → speaker (captured → played)", "mouth_to_speaker_ms"),
            ("captured → arrived at the button", "capture_to_arrival_ms"),
            ("arrived → played (Opus decode, sink)", "arrival_to_playout_ms")]
    lines = [
        "## 3. Talk-back: mouth to speaker",
        "",
        f"From [`{rel}`](../{rel}): `{data['command']}` on {data['measured_at']}, {data['browser']}, "
        f"Python {data['python']}, {data['cpus']} CPUs, loopback. An operator holds T for {data['seconds']:g} s "
        "in the web room; Chromium's fake microphone plays a 440 Hz tone; the relay runs as `pinkrelay serve`; "
        "one ButtonClient decodes with PyAV into a WAV file. Target: p95 ≤ "
        f"{data['target_p95_ms']:g} ms.",
        "",
        "| stage | p50 ms | p95 ms | p99 ms | max ms | packets |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        figures = data.get(key) or {}
        lines.append(f"| {label} | {f(figures.get('p50'), 1)} | **{f(figures.get('p95'), 1)}** | "
                     f"{f(figures.get('p99'), 1)} | {f(figures.get('max'), 1)} | {figures.get('n', 0)} |")
    lines += [
        "",
        f"Packets sent by the page: {data['packets_sent']}; played by the button: {data['packets_played']}. "
        "Captured is the page's capture time of a packet's first sample (`performance.timeOrigin` + the "
        "WebCodecs `AudioData` timestamp); played is when the decoded samples reached the button's sink. "
        "Chromium's fake device stamps each 10 ms buffer when it makes it, so a real microphone adds its own "
        "capture buffer (about 10 ms), and a sound card its output buffer (tens of ms), to these figures.",
        "",
    ]
    return lines


def evidence_section() -> list[str]:
    """§4 from the newest ``benchmarks/results/evidence-cost-*.json`` (benchmarks/evidence_cost.py), if any."""
    files = sorted((ROOT / "benchmarks" / "results").glob("evidence-cost-*.json"))
    if not files:
        return []
    data = json.loads(files[-1].read_text())
    rel = files[-1].relative_to(ROOT)
    args = data["args"]
    runs = {r["run"]: r for r in data["runs"]}
    labels = {"off": "no pre-roll (pre_roll = 0)", "preroll": f"pre-roll {args['pre_roll']:g} s on every stream",
              "recording": f"pre-roll, and {args['recording']} recordings"}
    lines = [
        "## 4. Evidence: pre-roll and recording cost",
        "",
        f"From [`{rel}`](../{rel}): `{data['command']}` on {data['measured_at']}, Python {data['python']}, "
        f"{data['cpus']} CPUs, loopback; load average {data['load_average_before'][0]:.1f} before and "
        f"{data['load_average_after'][0]:.1f} after (other jobs share this machine). `pinkrelay serve` on core 0; "
        f"{args['buttons']} buttons replay one H.264 + Opus clip (320x240, 15 fps, 250 kbit/s) on core 1; two "
        f"consoles in their own process watch the first {args['recording']} buttons. Each run: "
        f"{args['warmup']:g} s for the rings to fill, then {args['seconds']:g} s measured.",
        "",
        "| run | relay CPU % of a core | relay RSS MB | viewers' video p50 ms | **p99 ms** | video messages | "
        "recordings (MB written) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("off", "preroll", "recording"):
        r = runs[kind]
        lines.append(f"| {labels[kind]} | {r['relay_cpu_percent']:.1f} | {r['relay_rss_mb']:.1f} | "
                     f"{r['latency_p50_ms']:.2f} | **{r['latency_p99_ms']:.2f}** | {r['media_received']} | "
                     f"{r['recordings']} ({r['evidence_mb']:.1f}) |")
    off, preroll, recording = runs["off"], runs["preroll"], runs["recording"]
    alone = data.get("writer_alone") or {}
    lines += [
        "",
        f"Pre-roll on {args['buttons']} streams: {preroll['relay_rss_mb'] - off['relay_rss_mb']:+.1f} MB RSS "
        f"(the rings hold {args['pre_roll']:g} s of every stream's media, as references to the wire bytes already "
        f"in memory), {preroll['relay_cpu_percent'] - off['relay_cpu_percent']:+.1f} % CPU. "
        f"{args['recording']} recordings on top: {recording['relay_cpu_percent'] - preroll['relay_cpu_percent']:+.1f} "
        f"% CPU, including the 20 presses themselves and the pre-roll each recording writes first; the writer "
        f"thread alone (stream-copy mux, SHA-256, a signed manifest and fsync per segment), fed the same media "
        f"without a relay, needs {alone.get('cpu_percent_of_a_core_in_real_time', 0):.1f} % of a core for "
        f"{args['recording']} recordings in real time; "
        f"{recording['relay_rss_mb'] - preroll['relay_rss_mb']:+.1f} MB RSS; viewers' p99 "
        f"{preroll['latency_p99_ms']:.2f} → {recording['latency_p99_ms']:.2f} ms. Latency is the capture timestamp "
        "taken as the message leaves the button to its arrival at a console, both on loopback. For scale: the "
        f"first two rows differ only by the pre-roll rings, which do no work per viewer, and their p99 differs by "
        f"{100 * abs(preroll['latency_p99_ms'] / off['latency_p99_ms'] - 1):.0f} %: on this shared 2-core "
        "machine other jobs move the tail, so the 10 % target for recording needs a quiet machine to be judged. "
        "Part of what recording adds may be real: the writer is a Python thread, and while it muxes it holds the "
        "GIL for up to the switch interval (5 ms) at a time, which the event loop waits out; media read by the "
        "data plane's C threads (data_threads) would not wait for it.",
        "",
    ]
    return lines


def nagle_note(report: dict[str, Any]) -> str:
    """The same effect in isolation, from the limits section's loopback_nagle.py run."""
    limits = report.get("limits") or {}
    ways = {r["way"]: r for r in limits.get("loopback_nagle") or []}
    if not {"chunked", "one-write"} <= set(ways):
        return ""
    c, o = ways["chunked"], ways["one-write"]
    return (f" The same effect in isolation (`{limits.get('loopback_nagle_command', 'loopback_nagle.py')}`: one "
            f"Python sender to {c['n']} loopback sockets, a 9.2 KB frame 30 times a second each): five send()s "
            f"per frame under Nagle cost the sender {pct(c['sender_cpu_fraction'])} of a core and the reader "
            f"{pct(c['reader_cpu_fraction'])}; one send() of the same bytes with TCP_NODELAY cost "
            f"{pct(o['sender_cpu_fraction'])} and {pct(o['reader_cpu_fraction'])}.")


def notes(report: dict[str, Any]) -> list[str]:
    out = []
    points = [p for p in report["fanout"].get("points", []) if "error" not in p]
    bound = sorted({(p["system"], p["n"]) for p in points if p.get("generator_bound")})
    if bound:
        out.append("- Rows limited by the load generator (its processes used ≥ 85 % of core 1): "
                   + ", ".join(f"{s} N={n}" for s, n in bound) + ". Their Gbit/s is what the generator could read, "
                   "and their CPU per Gbit is still the relay's own.")
    else:
        busiest = max((p.get("load_cpu_fraction") or 0 for p in points), default=0)
        out.append(f"- No fan-out run was limited by the load generator: its processes used at most "
                   f"{100 * busiest:.0f} % of core 1, and every subscriber kept up or the relay is named as the "
                   "limit. Every row measures the relay.")
    disturbed = sorted({(p["system"], p["n"], p["rep"]) for p in points
                        if max(p.get("relay_core_other") or 0, p.get("load_core_other") or 0) > OTHER_LOAD})
    if disturbed:
        out.append("- Other sessions share this machine. Runs during which other jobs seemed to use > 20 % of a core "
                   "(from /proc/stat's tick-sampled per-core counters, so indicative only; the servers run "
                   "SCHED_FIFO so those jobs could not preempt them, and a server's CPU seconds are its own, but "
                   "caches and the load side are disturbed): "
                   + ", ".join(f"{s} N={n} rep {r}" for s, n, r in disturbed) + ".")
    summary = report["fanout"].get("summary") or []
    wide = [r for r in summary if r.get("cpu_s_per_gbit_max") and r.get("cpu_s_per_gbit_min")
            and r["cpu_s_per_gbit_max"] / r["cpu_s_per_gbit_min"] > 1.15]
    if wide:
        out.append("- Run-to-run spread of CPU per Gbit above 15 %: " + ", ".join(
            f"{r['system']} N={r['n']} ({r['cpu_s_per_gbit_min']:.3f}–{r['cpu_s_per_gbit_max']:.3f})" for r in wide)
            + ". At small N the relay uses a few % of a core and the 10 ms resolution of /proc's CPU counters "
            "and idle housekeeping (timers, heartbeats) dominate: those rows are not a per-byte cost.")
    elif summary:
        out.append("- Run-to-run spread of CPU per Gbit stayed within 15 % at every point.")
    if summary:
        out.append("- Relay CPU includes the kernel's share of loopback TCP: for loopback the receive path runs in "
                   "the context of whoever transmits the segment. That is not the same for both relays. nginx-rtmp "
                   "never sets TCP_NODELAY (strace of a play session: no setsockopt after accept4) and writes "
                   "each 4096-byte RTMP chunk with its own send(), so Nagle holds the later chunks of a frame "
                   "until the subscriber's ACK arrives, and the kernel then transmits them, and runs the "
                   "receiver's side of loopback, in the subscriber process's context. Part of nginx-rtmp's TCP "
                   "work is billed to the load generator: with the same subscriber code, its subscribers' "
                   "process uses more CPU per Gbit than pinkrelay's. pinkrelay sets TCP_NODELAY (latency first) "
                   "and writes each subscriber's frames in one sendmsg, so it pays for all of its own sending. "
                   "The 'relay + subscribers' columns add the subscribers' process to the relay and show the "
                   "machine's whole cost." + nagle_note(report))
    small = {r["system"]: r for r in summary if r["n"] == min(x["n"] for x in summary)}
    rate = (report.get("clip") or {}).get("messages_per_s")
    if rate and {"pinkrelay", "nginx-rtmp"} <= set(small):
        per = {k: 1000 * v["relay_cpu_fraction"] / rate for k, v in small.items()}
        out.append(f"- At small N the cost is per message received, not per subscriber: at N={small['pinkrelay']['n']} "
                   f"pinkrelay spends about {per['pinkrelay']:.2f} ms of CPU per media message "
                   f"({rate:.0f} a second), nginx-rtmp about {per['nginx-rtmp']:.2f} ms. Each message wakes "
                   "pinkrelay's Python event loop once (the wakeup, the read and the decode in the interpreter); "
                   "the per-subscriber work is in C. From a few hundred subscribers on, the per-subscriber "
                   "cost dominates.")
    pr = [r for r in summary if r["system"] == "pinkrelay" and r.get("audio_latency_p50_ms") is not None]
    if pr:
        out.append("- pinkrelay's audio waits up to `audio_hold` (35 ms by default) for the next video frame to the "
                   "same subscriber and leaves in the same write, so a 30 fps stream costs 30 writes a second per "
                   "subscriber instead of 77 (docs/operations.md). That is why its audio latency is about 10-35 "
                   "ms higher than its video latency; video, alerts and control frames are never held. Latency is "
                   "measured by one probe console among the N subscribers; at large N it includes the time the "
                   "relay takes to write the N others before or after it.")
    runs = [r for r in report["alerts"].get("runs", []) if "phases" in r]
    for r in runs:
        ph = r["phases"]["loaded"]
        if (ph.get("load_cpu_fraction") or 0) >= 0.85:
            out.append(f"- {r['system']} loaded alert phase: the load processes used {pct(ph['load_cpu_fraction'])} "
                       "of core 1, so part of its latency is the clients', not the server's.")
    if any(r["system"] == "mosquitto" for r in runs):
        out.append("- paho-mqtt reads each packet's fixed header one byte per `recv`; at 200 MB/s of bulk to 4 "
                   "consoles that costs more CPU than the broker itself, so the `mosquitto-lean` rows (same broker, "
                   "minimal subscriber) are the fair comparison for the loaded phase.")
    if any(r["system"].startswith("mosquitto") for r in runs):
        out.append("- Why mosquitto's alerts are slow under load here: each MQTT connection is one FIFO, so an alert "
                   "for a console waits behind the bulk bytes already queued for that console (in mosquitto and in "
                   "the kernel's socket buffers, which loopback autotuning lets grow to megabytes). pinkrelay sends "
                   "alerts in lane 0, ahead of queued media, to the same consoles. With the bulk going to other "
                   "subscribers than the alert consoles, mosquitto's alert queue would stay short.")
    if report.get("mode") == "quick":
        out.append("- Quick mode: fewer N, shorter windows; use the full run for figures.")
    if report.get("interrupted"):
        out.append(f"- The run was interrupted ({report['interrupted']}); some sections are missing.")
    return out


def main() -> int:
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
    else:
        found = sorted((ROOT / "benchmarks" / "results").glob("compare-*.json"))
        if not found:
            print("no benchmarks/results/compare-*.json: run make bench-compare", file=sys.stderr)
            return 1
        path = found[-1]
    for written in write_report(path):
        print(f"wrote {written.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
