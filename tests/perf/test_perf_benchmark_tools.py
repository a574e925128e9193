"""The benchmark's own parts: charts keep their scenario's answer, and the harness reads right.

Nothing here is timed: these tests make sure the benchmark measures what it claims to (the right
cards, the right chart sizes and mix, a floor answer of the same size, wrk output read right).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import floor_app
from benchmarks.charts import (
    NOISE_MIX,
    ORDER_SIGN_SCENARIO,
    OTHER_CONDITIONS,
    OTHER_PROCEDURES,
    OTHER_REPORTS,
    OTHER_SERVICES,
    PATIENT_VIEW_SCENARIO,
    SCORE_CODES,
    build_chart,
    card_signature,
)
from benchmarks.common import hook_call, percentile, summary_ms, wsgi_post
from benchmarks.http import parse_wrk
from benchmarks.inprocess import Probe, check_call
from cds_service.api.services import SERVICES
from cds_service.fhir.record import is_relevant
from cds_service.knowledge import load_knowledge

SHARED = Path(__file__).resolve().parents[3] / "shared"


@pytest.mark.parametrize("scenario", [PATIENT_VIEW_SCENARIO, ORDER_SIGN_SCENARIO])
@pytest.mark.parametrize("size", [100, 1_000])
def test_a_grown_chart_gives_the_scenarios_cards(client, scenario, size):
    small = hook_call(scenario, 10)  # the fixture patient and a few resources of noise
    grown = hook_call(scenario, size)
    assert grown.chart.size == size
    answers = []
    for call in (small, grown):
        response = client.post(call.path, data=call.body, content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)
        answers.append(card_signature(response.get_json()["cards"]))
    assert answers[0] == answers[1]
    assert {rule for rule, _, _ in answers[1]} == set(grown.chart.scenario.expected_cards)


def test_chart_mix_is_mostly_resources_no_rule_reads():
    knowledge = load_knowledge()
    chart = build_chart(PATIENT_VIEW_SCENARIO, 1_000)
    resources = chart.scenario.resources
    base, history, noise = (chart.composition[k] for k in ("base", "history", "noise"))
    assert base + history + noise == len(resources) == 1_000
    assert history == 50 - base  # RELEVANT_FRACTION of the chart, the patient's own included
    assert chart.relevant == sum(is_relevant(r, knowledge) for r in resources) == 50
    assert len({(r["resourceType"], r["id"]) for r in resources}) == 1_000  # ids are unique
    pid = chart.scenario.patient_id
    assert all(r.get("subject", {}).get("reference") == f"Patient/{pid}"
               for r in resources if r["resourceType"] != "Patient")
    assert sum(share for _, share in NOISE_MIX) == pytest.approx(1.0)


def test_charts_are_deterministic():
    first = build_chart(ORDER_SIGN_SCENARIO, 300).scenario.resources
    again = build_chart(ORDER_SIGN_SCENARIO, 300).scenario.resources
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_noise_codes_are_verified_terminology_that_no_rule_reads():
    """House rule: never invent a code. Every noise code is a VERIFIED terminology.md row."""
    rows = (SHARED / "clinical" / "terminology.md").read_text(encoding="utf-8").splitlines()
    knowledge = load_knowledge()
    codes = [(s, c) for s, c, *_ in SCORE_CODES]
    codes += [(s, c) for s, c, _ in OTHER_CONDITIONS + OTHER_PROCEDURES + OTHER_SERVICES
              + OTHER_REPORTS]
    for system, code in codes:
        pattern = re.compile(rf"(?<![\w.\-]){re.escape(code)}(?![\w\-]|\.\d)")
        matching = [row for row in rows if pattern.search(row)]
        assert any("VERIFIED" in row and "UNVERIFIED" not in row for row in matching), code
        assert not knowledge.concepts_of(system, code), code


def test_floor_answers_with_exactly_the_requested_size():
    for size in (26, 100, 11_078):
        body = floor_app.payload(size)
        assert len(body) == size
        json.loads(body)
    app = floor_app.create_floor_app(5_000)
    status, data = wsgi_post(app, "/cds-services/x", b'{"hook": "patient-view"}')
    assert (status, len(data)) == (200, 5_000)
    assert wsgi_post(app, "/cds-services/x", b"[1]")[0] == 400
    assert app.test_client().get("/readyz").status_code == 200  # ServedProcess waits for it


def test_wsgi_post_drives_the_real_app(app):
    call = hook_call(PATIENT_VIEW_SCENARIO, 100)
    cards = check_call(app, call)
    assert len(cards) == len(call.chart.scenario.expected_cards)
    assert call.service is SERVICES[call.service.id]


def test_probe_splits_a_call_and_restores_the_app(app):
    call = hook_call(ORDER_SIGN_SCENARIO, 100)
    probe = Probe(app)
    try:
        with probe.gc_timing():
            assert wsgi_post(app, call.path, call.body)[0] == 200
        assert probe.parts["body"] > 0 and probe.parts["pipeline"] > 0
        assert "storage" in probe.parts  # the served-card write happened and was timed
    finally:
        probe.close()
    state = app.extensions["cds"]
    assert "run" not in vars(state.pipeline) and "record_served" not in vars(state.store)


WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8000/cds-services/x
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    2.00ms  40.00ms   90.00%
    Req/Sec   700.00    100.00     1.00k    70.00%
  Latency Distribution
     50%    4.80ms
     75%    5.50ms
     90%    7.00ms
     99%  850.00us
  14000 requests in 10.00s, 150.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   1399.50
Transfer/sec:     15.00MB
"""


def test_parse_wrk_reads_rate_latency_and_failures():
    result = parse_wrk(WRK_OUTPUT)
    assert result["requests_per_s"] == 1399.5
    assert result["requests"] == 14000
    assert result["non_2xx"] == 3
    assert result["latency_ms"] == {"p50": 4.8, "p90": 7.0, "p99": 0.85}
    with pytest.raises(RuntimeError):
        parse_wrk("wrk: connection refused")


def test_percentiles():
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    summary = summary_ms([0.001, 0.002, 0.003])
    assert (summary["p50"], summary["min"], summary["max"], summary["n"]) == (2.0, 1.0, 3.0, 3)


def test_missing_wrk_stops_the_benchmark_with_a_clear_message(monkeypatch, capsys):
    from benchmarks import __main__ as bench
    from benchmarks import http

    monkeypatch.setattr(http.shutil, "which", lambda name: None)
    with pytest.raises(http.WrkMissing, match="apt-get install -y wrk"):
        http.require_wrk()
    assert bench.main(["--no-in-process", "--no-fallback"]) == 2
    assert "apt-get install -y wrk" in capsys.readouterr().err


def test_targets_are_judged_on_the_worse_hook():
    from benchmarks.__main__ import verdicts

    def entry(p50, p99):
        return {"latency_ms": {"p50": p50, "p99": p99}}

    results = {
        "in_process": {
            "patient-view": {"100": entry(2.0, 9.0), "10000": entry(200.0, 300.0),
                             "scaling_1k_to_10k": 9.0},
            "order-sign": {"100": entry(3.5, 12.0), "10000": entry(240.0, 260.0),
                           "scaling_1k_to_10k": 10.5},
        },
        "http": {"ratio": 0.71, "memory_after_10k": {"peak_rss_mb_max": 151.0}},
        "fallback": {"ratio_total_to_slowest": 1.1},
    }
    met = {row["id"]: (row["measured"], row["met"]) for row in verdicts(results)}
    assert met == {
        "typical_p50_ms": (3.5, False),
        "typical_p99_ms": (12.0, True),
        "http_ratio": (0.71, True),
        "chart_10k_p50_ms": (240.0, True),
        "scaling_1k_to_10k": (10.5, False),
        "fallback_ratio": (1.1, True),
        "worker_peak_rss_mb": (151.0, False),
    }


def test_in_process_results_carry_the_floor_and_the_table_shows_it(monkeypatch):
    """Each hook and size has the floor app's p50 for the same body; growth is shown for both."""
    from benchmarks import inprocess
    from benchmarks.__main__ import TARGETS, table, verdicts

    monkeypatch.setattr(inprocess, "WARMUP", 0)
    in_process = inprocess.run((1_000, 10_000), repeats=1, calls={1_000: 1, 10_000: 1},
                               log=lambda line: None)
    assert set(in_process) == {"patient-view", "order-sign"}
    for per_size in in_process.values():
        for size in ("1000", "10000"):
            floor = per_size[size]["floor"]
            assert floor["response_bytes"] > 0 and floor["p50_ms"] > 0
            assert floor["runs_p50_ms"] == [floor["p50_ms"]]
        # Each figure is rounded to 0.01, so their quotient is off by up to about 1%.
        assert per_size["scaling_over_floor"] == pytest.approx(
            per_size["scaling_1k_to_10k"] / per_size["floor_scaling_1k_to_10k"],
            rel=0.01, abs=0.01)
    results = {"machine": {"nproc": 2, "cpu_model": "x", "python": "3", "loadavg_start": [0]},
               "options": {"repeats": 1}, "in_process": in_process}
    results["targets"] = verdicts(results)
    assert [row["id"] for row in results["targets"]] == [t[0] for t in TARGETS]  # no new target
    lines = table(results).splitlines()
    assert sum("floor (bare Flask, same body) p50 ms: 1000: " in line for line in lines) == 2
    assert sum("floor p50 growth 1k -> 10k: " in line and "ours / floor: " in line
               for line in lines) == 2


def test_fetched_chart_pages_through_a_server_in_its_own_process_and_the_table_shows_it():
    """The long-chart-from-FHIR benchmark gives the scenario's cards (``run`` checks them) with
    its observations spread over several pages, and reports against its slowest query."""
    from benchmarks import fetched
    from benchmarks.__main__ import table

    assert build_chart(PATIENT_VIEW_SCENARIO, 300).composition["Observation"] > 3 * 40
    result = fetched.run(size=300, page_size=40, calls=1, log=lambda line: None)
    assert result["resources"] == 300 and result["page_size"] == 40
    assert set(result["per_query_all_pages_ms"]) == set(SERVICES["hypermobility-pain-patient-view"]
                                                        .prefetch)
    slowest = result["slowest_query"]
    assert result["slowest_query_all_pages_ms"] == max(result["per_query_all_pages_ms"].values())
    assert result["ratio_total_to_slowest"] == pytest.approx(
        result["latency_ms"]["p50"] / result["per_query_all_pages_ms"][slowest], rel=0.01)
    results = {"machine": {"nproc": 2, "cpu_model": "x", "python": "3", "loadavg_start": [0]},
               "options": {"repeats": 1}, "fetched": result, "targets": []}
    assert "Long chart fetched from a FHIR server (300 resources, no prefetch, pages of 40" in (
        table(results))


def test_a_wrk_run_that_one_worker_took_alone_is_run_again(monkeypatch, tmp_path):
    """The HTTP benchmark redoes a run in which a worker idled (it took no connections), for
    the floor and the service alike, and says how often; after a few tries it keeps the last
    run, marked, rather than stop the whole benchmark."""
    from benchmarks import http

    class FakeServer:
        port = 1

        def worker_pids(self):
            return [11, 12]

    clock = {11: 0.0, 12: 0.0}
    shares = iter([(5.0, 0.1), (5.0, 4.0), (5.0, 0.0), (5.0, 0.2), (0.0, 0.0)])

    def fake_wrk(*args, **kwargs):
        first, second = next(shares)
        clock[11] += first
        clock[12] += second
        return {"requests_per_s": 1000.0 * (first + second)}

    monkeypatch.setattr(http, "run_wrk", fake_wrk)
    monkeypatch.setattr(http, "cpu_seconds", lambda pid: clock[pid])
    logged = []
    result = http.balanced_wrk("wrk", FakeServer(), "/p", tmp_path / "b", duration=1,
                               connections=8, threads=2, log=logged.append)
    assert result["worker_spread"] == 0.8 and result["requests_per_s"] == 9000.0
    assert result["discarded_unbalanced"] == [{"requests_per_s": 5100.0, "worker_spread": 0.02}]
    assert len(logged) == 1
    last = http.balanced_wrk("wrk", FakeServer(), "/p", tmp_path / "b", duration=1,
                             connections=8, threads=2, tries=2, log=logged.append)
    assert last["unbalanced"] is True and last["requests_per_s"] == 5200.0
    assert last["discarded_unbalanced"] == [{"requests_per_s": 5000.0, "worker_spread": 0.0}]
    assert http.spread({1: 0.0}, {1: 3.0}) == 1.0  # one worker is always even
    assert http.spread({1: 0.0, 2: 0.0}, {1: 0.0, 2: 0.0}) == 1.0  # nothing ran


def test_a_wrk_run_reports_the_workers_cpu_per_request(monkeypatch, tmp_path):
    """What a call costs the machine, summed over the workers: not the rate, which also
    depends on what else the machine is doing."""
    from benchmarks import http

    class FakeServer:
        port = 1

        def worker_pids(self):
            return [11, 12]

    clock = {11: 10.0, 12: 20.0}

    def fake_wrk(*args, **kwargs):
        clock[11] += 3.0
        clock[12] += 2.0
        return {"requests_per_s": 400.0, "requests": 4000}

    monkeypatch.setattr(http, "run_wrk", fake_wrk)
    monkeypatch.setattr(http, "cpu_seconds", lambda pid: clock[pid])
    result = http.balanced_wrk("wrk", FakeServer(), "/p", tmp_path / "b", duration=1,
                               connections=8, threads=2, log=lambda line: None)
    assert result["worker_cpu_ms_per_request"] == 1.25  # 5 CPU seconds over 4,000 requests
    assert http.cpu_per_request({1: 0.0}, {1: 1.0}, {"requests": 0}) is None
    # A worker replaced mid-run reads 0 s after: its lost CPU time is no figure (review).
    assert http.cpu_per_request({1: 5.0, 2: 5.0}, {1: 9.0, 2: 0.0}, {"requests": 10}) is None


def test_the_served_keys_benchmark_writes_every_row_and_reports_each_stretch():
    """Not timed: the harness's arithmetic and that its rows reach the table."""
    import uuid

    from benchmarks import served_keys

    costs = served_keys.cost_per_row(lambda: str(uuid.uuid4()), 2 * served_keys.BATCH, 2)
    assert len(costs) == 2 and all(cost > 0 for cost in costs)
    with pytest.raises(ValueError, match="at least"):
        served_keys.cost_per_row(str, served_keys.BATCH, 2)
