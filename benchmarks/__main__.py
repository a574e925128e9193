"""``python -m benchmarks`` (or ``make bench``): every benchmark, a table, and a JSON file.

Options trade time for precision; the defaults take about two minutes on two cores. The JSON
(``benchmarks/results/bench-<time>.json``, and ``latest.json``) holds every run, not only the
medians printed here, plus the machine, its load average and the git commit measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import fallback, fetched, http, inprocess
from benchmarks.charts import SIZES
from benchmarks.common import RESULTS_DIR, machine

TYPICAL = "100"  # the typical chart of the targets: ~100 resources
TARGETS = (
    # (id, description, limit, higher is better)
    ("typical_p50_ms", "typical chart p50 (ms)", 3.0, False),
    ("typical_p99_ms", "typical chart p99 (ms)", 15.0, False),
    ("http_ratio", "HTTP throughput / floor", 0.7, True),
    ("chart_10k_p50_ms", "10k-resource chart p50 (ms)", 250.0, False),
    ("scaling_1k_to_10k", "p50 growth 1k -> 10k (linear: 10x)", 10.0, False),
    ("fallback_ratio", "fallback total / slowest query", 1.3, False),
    ("worker_peak_rss_mb", "worker peak RSS after 10k (MB)", 150.0, False),
)


def git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "cds_service"],
                                    cwd=root, capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "service_code_uncommitted_changes": dirty}


def measured(results: dict[str, Any]) -> dict[str, float | None]:
    """The figure each target is judged on (the worse hook where there are two)."""
    inproc = results.get("in_process") or {}

    def worst(size: str, key: str) -> float | None:
        values = [h[size]["latency_ms"][key] for h in inproc.values() if size in h]
        return max(values) if values else None

    scaling = [h["scaling_1k_to_10k"] for h in inproc.values() if "scaling_1k_to_10k" in h]
    http_result = results.get("http") or {}
    memory = http_result.get("memory_after_10k") or {}
    return {
        "typical_p50_ms": worst(TYPICAL, "p50"),
        "typical_p99_ms": worst(TYPICAL, "p99"),
        "http_ratio": http_result.get("ratio"),
        "chart_10k_p50_ms": worst("10000", "p50"),
        "scaling_1k_to_10k": max(scaling) if scaling else None,
        "fallback_ratio": (results.get("fallback") or {}).get("ratio_total_to_slowest"),
        "worker_peak_rss_mb": memory.get("peak_rss_mb_max"),
    }


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    figures = measured(results)
    rows = []
    for key, label, limit, higher in TARGETS:
        value = figures[key]
        ok = None if value is None else (value >= limit if higher else value <= limit)
        rows.append({"id": key, "target": label, "limit": limit, "higher_is_better": higher,
                     "measured": value, "met": ok})
    return rows


def table(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"Machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}; load average "
        f"{m['loadavg_start']} at start, {m.get('loadavg_end')} at end"
    )
    inproc = results.get("in_process")
    if inproc:
        lines.append("")
        lines.append("In process (WSGI, served-card write in place; medians of "
                     f"{results['options']['repeats']} runs; bg cpu: other threads' CPU per call; "
                     "floor: floor_app.py called the same way with the same bodies)")
        lines.append(
            f"{'hook':13}{'resources':>10}{'relevant':>9}{'p50 ms':>9}{'p95 ms':>9}"
            f"{'p99 ms':>9}{'body ms':>9}{'pipe ms':>9}{'store ms':>9}"
            f"{'bg cpu':>8}{'gc ms':>8}"
        )
        for hook, per_size in inproc.items():
            for entry in per_size.values():
                if not isinstance(entry, dict):
                    continue
                lat, br = entry["latency_ms"], entry["breakdown"]
                lines.append(
                    f"{hook:13}{entry['resources']:>10}{entry['relevant_resources']:>9}"
                    f"{lat['p50']:>9.2f}{lat['p95']:>9.2f}{lat['p99']:>9.2f}"
                    f"{br['body_ms']:>9.2f}"
                    f"{br['pipeline_ms']:>9.2f}{br['storage_ms']:>9.3f}"
                    f"{br['background_cpu_ms']:>8.2f}{br['gc_ms']:>8.2f}"
                )
            if "scaling_1k_to_10k" in per_size:
                lines.append(f"{'':13}p50 growth 1k -> 10k: {per_size['scaling_1k_to_10k']}x")
            floors = ", ".join(f"{size}: {sized['floor']['p50_ms']:.2f}"
                               for size, sized in per_size.items() if isinstance(sized, dict))
            lines.append(f"{'':13}floor (bare Flask, same body) p50 ms: {floors}")
            if "floor_scaling_1k_to_10k" in per_size:
                lines.append(
                    f"{'':13}floor p50 growth 1k -> 10k: {per_size['floor_scaling_1k_to_10k']}x; "
                    f"ours / floor: {per_size['scaling_over_floor']:.2f} (reference, not a target)"
                )
    h = results.get("http")
    if h:
        lines.append("")
        lines.append(
            f"HTTP (gunicorn {h['workers']} workers x {h['threads']} threads; wrk "
            f"{h['wrk_threads']} threads, {h['connections']} connections, {h['duration_s']} s x "
            f"{h['rounds']} rounds; {h['resources']}-resource chart, "
            f"{h['request_bytes']} B in, {h['response_bytes']} B out)"
        )
        redone = h.get("unbalanced_runs_redone", {})
        kept = sum(r.get("unbalanced", False) for r in h["floor_runs"] + h["service_runs"])
        lines.append(
            f"  floor {h['floor_requests_per_s']:.0f} req/s, service "
            f"{h['service_requests_per_s']:.0f} req/s, ratio {h['ratio']:.2f} (runs redone "
            f"because one worker took every connection: floor {redone.get('floor', 0)}, "
            f"service {redone.get('service', 0)}; kept although never even: {kept})"
        )
        floor_cpu = h.get("floor_worker_cpu_ms_per_request")
        service_cpu = h.get("service_worker_cpu_ms_per_request")
        if floor_cpu and service_cpu:
            lines.append(
                f"  workers' CPU per call: floor {floor_cpu:.3f} ms, service {service_cpu:.3f} ms "
                f"(floor / service {floor_cpu / service_cpu:.2f})"
            )
        mem = h["memory_after_10k"]
        before = max((w["peak_rss_mb"] for w in mem["workers_before"].values()), default=None)
        pss = max((w["pss_mb"] for w in mem["workers"].values()), default=None)
        lines.append(
            f"  worker peak RSS after {mem['calls']} calls with 10k resources: "
            f"{mem['peak_rss_mb_max']} MB (before them {before} MB; PSS now {pss} MB; "
            f"master RSS {mem['master']['rss_mb']} MB)"
        )
    f = results.get("fallback")
    if f:
        lines.append("")
        lines.append(fallback.summary(f))
    g = results.get("fetched")
    if g:
        lines.append("")
        lines.append(fetched.summary(g))
    lines.append("")
    lines.append(f"{'target':42}{'limit':>8}{'measured':>10}  met")
    for row in results["targets"]:
        value = "-" if row["measured"] is None else f"{row['measured']:.2f}"
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        sign = ">=" if row["higher_is_better"] else "<="
        lines.append(f"{row['target']:42}{sign}{row['limit']:>6}{value:>10}  {met}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="one short run of everything (a smoke test, not figures to quote)")
    parser.add_argument("--repeats", type=int, default=3, help="in-process runs per size")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="floor/service wrk rounds")
    parser.add_argument("--workers", type=int, default=http.WORKERS,
                        help="gunicorn workers, for the floor and the service alike")
    parser.add_argument("--threads", type=int, default=http.THREADS,
                        help="threads per worker, for the floor and the service alike")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="FHIR server delay")
    parser.add_argument("--no-http", action="store_true", help="skip gunicorn/wrk and memory")
    parser.add_argument("--no-fallback", action="store_true", help="skip the FHIR fallback")
    parser.add_argument("--no-fetched", action="store_true",
                        help="skip the long chart fetched from a FHIR server")
    parser.add_argument("--no-in-process", action="store_true", help="skip in-process timing")
    parser.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.repeats, args.duration, args.rounds = 1, 3, 1
    if not args.no_http:
        try:
            http.require_wrk()
        except http.WrkMissing as missing:
            print(f"error: {missing}", file=sys.stderr)
            return 2
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None else
                                                          sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "git": git_commit(),
        "options": vars(args) | {"out": str(args.out) if args.out else None},
    }
    log = print
    if not args.no_in_process:
        log("in process ...")
        calls = {100: 100, 1_000: 20, 10_000: 4} if args.quick else None
        results["in_process"] = inprocess.run(SIZES, repeats=args.repeats, calls=calls, log=log)
    if not args.no_http:
        log("over HTTP ...")
        results["http"] = http.run(duration=args.duration, rounds=args.rounds,
                                   workers=args.workers, threads=args.threads,
                                   memory_calls=4 if args.quick else 8, log=log)
    if not args.no_fallback:
        log("FHIR fallback ...")
        results["fallback"] = fallback.run(delay_s=args.delay_ms / 1000,
                                           calls=3 if args.quick else 7, log=log)
    if not args.no_fetched:
        log("long chart fetched from a FHIR server ...")
        results["fetched"] = fetched.run(calls=3 if args.quick else 7, log=log)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = verdicts(results)
    out = args.out
    if out is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    out.write_text(text)
    if out.parent == RESULTS_DIR:
        (RESULTS_DIR / "latest.json").write_text(text)
    print()
    print(table(results))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
