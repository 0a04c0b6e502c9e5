"""The bench's own judgements, on made-up samples: when a rate step holds, CPU per command, the chart."""

from __future__ import annotations

from pathlib import Path

from bench import chart, cpu_cost, rate_steps, scale, suite
from bench.machine import host_calibration
from bench.memory import MachineTicks, machine_shares
from bench.projection_runs import ProjectorRun
from bench.raw_limits import Rate
from bench.wrk import WrkResult


def test_a_backlog_that_stays_steady_and_drains_holds_and_one_that_grows_does_not() -> None:
    assert rate_steps._growing([0, 3, 1, 4, 2, 0, 5, 2], rate=100, drained_seconds=0.3) == ""
    # The consumers' batching keeps a steady ~2 s of commands in the samples: not growing.
    steady = [53, 61, 61, 65, 60, 58, 62, 58, 67, 57, 55, 3, 33, 42, 48, 31, 42, 38, 58]
    assert rate_steps._growing(steady, rate=25, drained_seconds=0.8) == ""
    # A backlog the pipeline cannot work off in time after the last command.
    climbing_steadily = [0, 50, 100, 150, 200, 250, 300, 350]
    assert "not drained" in rate_steps._growing(climbing_steadily, rate=100, drained_seconds=None)
    # Drained in the end but climbing all along by more than a second of commands.
    climbing = [0, 0, 10, 20, 150, 250, 230, 40]
    assert "grew" in rate_steps._growing(climbing, rate=50, drained_seconds=2.0)


def step(rate: int, held: bool, p99: float) -> rate_steps.Step:
    return rate_steps.Step(
        rate=rate,
        seconds=60,
        accepted=rate * 60,
        scheduled=rate * 60,
        command_failures=0,
        reads_not_fresh=0,
        achieved_per_second=rate if held else rate * 0.8,
        freshness_p99_ms=p99,
        freshness_p50_ms=p99 / 3,
        command_p99_ms=10,
        backlog_samples=[0, 1, 0],
        held=held,
        why_not="" if held else "freshness p99 250 ms",
    )


def test_the_sustained_figure_is_the_highest_step_that_held() -> None:
    figure = rate_steps.figure([step(100, True, 40), step(150, True, 70), step(200, False, 250)], 450, 16)
    assert figure.measured.startswith("150 commands/s (at 200/s: freshness p99 250 ms)")
    assert figure.met is False
    assert rate_steps.figure([step(200, True, 50), step(250, True, 60)], 450, 16).met is True


def test_steps_go_up_while_they_hold_and_down_by_half_a_step_when_the_first_does_not() -> None:
    def nxt(*steps: rate_steps.Step) -> int | None:
        return rate_steps.next_rate(list(steps), start=100, step=50, most=250)

    assert nxt() == 100
    assert nxt(step(100, True, 40)) == 150
    assert nxt(step(100, True, 40), step(150, True, 60), step(200, True, 70)) == 250
    assert nxt(step(100, True, 40), step(150, True, 60), step(200, True, 70), step(250, True, 80)) is None
    assert nxt(step(100, True, 40), step(150, False, 140)) is None
    # The first rate is too much: down by 25 until one holds, never to 0.
    assert nxt(step(100, False, 250)) == 75
    assert nxt(step(100, False, 250), step(75, False, 150)) == 50
    assert nxt(step(100, False, 250), step(75, False, 150), step(50, True, 60)) is None
    assert (
        nxt(step(100, False, 250), step(75, False, 150), step(50, False, 120), step(25, False, 110)) is None
    )


def test_stepping_down_reports_the_best_held_and_what_failed_right_above_it() -> None:
    figure = rate_steps.figure([step(100, False, 250), step(75, False, 150), step(50, True, 60)], 90, 16)
    assert figure.measured.startswith("50 commands/s (at 75/s: freshness p99 250 ms)")
    nothing = rate_steps.figure([step(100, False, 250), step(50, False, 150)], 90, 16)
    assert nothing.measured.startswith("0 commands/s (at 50/s:") and nothing.met is False


def test_cpu_per_command_sums_the_services_and_reports_the_servers_beside() -> None:
    cores = {
        "command-api": 0.2,
        "query-api": 0.1,
        "relay": 0.05,
        "projectors": 0.1,
        "workers": 0.05,
        "mongodb": 0.4,
        "kafka": 0.2,
        "redis": 0.05,
        "bench client": 0.3,
    }
    figure = cpu_cost.figure(cores, rate=100, seconds=60)
    assert figure.data["services_ms"] == 5.0 and figure.met is True
    assert figure.data["servers_ms"] == 6.5
    assert figure.data["ms_per_command"]["bench client"] == 3.0


def test_cpu_per_command_divides_by_the_commands_accepted_over_the_window() -> None:
    # 100/s offered for 60 s, 2,000 accepted, the window 80 s (the last reads waited for): the
    # command API's 0.2 core is 16 CPU s, 8 ms a command run (not 2 ms a command offered).
    figure = cpu_cost.figure({"command-api": 0.2}, rate=100, seconds=60, accepted=2_000, elapsed=80)
    assert figure.data["ms_per_command"]["command-api"] == 8.0
    assert figure.data["commands"] == 2_000 and figure.data["window_seconds"] == 80


def test_the_machine_window_counts_busy_steal_and_what_no_measured_process_used() -> None:
    # /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest, guest_nice).
    start = MachineTicks.parse("cpu  1000 0 200 5000 10 0 20 5 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    end = MachineTicks.parse("cpu  1900 0 380 5700 10 0 40 25 0 0\n")
    assert start.busy == 1220 and start.steal == 5
    # 10 s at 100 ticks a second: 1,100 busy ticks are 1.1 cores, 20 stolen 0.02.
    shares = machine_shares(start, end, 10.0, accounted=0.9, ticks=100)
    assert shares == {"busy_cores": 1.1, "steal_cores": 0.02, "unaccounted_cores": 0.2}
    # Measured processes can read more than the machine's ticks over a short window: never below 0.
    assert machine_shares(start, end, 10.0, accounted=1.5, ticks=100)["unaccounted_cores"] == 0.0


def test_the_chart_is_a_png_beside_the_results(tmp_path: Path) -> None:
    figures = [
        rate_steps.figure([step(100, True, 40), step(150, False, 140)], 450, 16),
        cpu_cost.figure({"command-api": 0.2, "mongodb": 0.4}, rate=100, seconds=60),
    ]
    assert chart.panels(figures) == ["steps", "cpu"]
    path = chart.draw(figures, tmp_path / "latest.png")
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")
    assert chart.draw([], tmp_path / "none.png") is None


def size_row(campaigns: int, *, list_p99: float, rate: float, rss: float, bytes_each: float) -> scale.SizeRow:
    return scale.SizeRow(
        campaigns=campaigns,
        events=campaigns * 2,
        produce_seconds=1.0,
        projector_events_per_second=rate,
        projector_events=campaigns * 2,
        projector_cpu_ms_per_event=0.25,
        redis_cpu_ms_per_event=0.08,
        redis_usec_per_event={"evalsha": 90.0, "zadd": 10.0},
        redis_bytes=int(bytes_each * campaigns),
        redis_keys=campaigns + 40,
        bytes_per_campaign=bytes_each,
        bytes_per_campaign_by_projection={"campaigns": bytes_each * 0.8, "stats": bytes_each * 0.2},
        used_memory_delta_per_campaign=bytes_each * 1.1,
        json_document_bytes=500.0,
        list_p99_ms=list_p99,
        list_p50_ms=list_p99 / 4,
        list_requests_per_second=2000.0,
        list_index_calls_per_second=16.0,
        list_uncached_p99_ms=list_p99 * 2,
        list_uncached_p50_ms=list_p99,
        list_uncached_requests_per_second=1000.0,
        list_uncached_index_calls_per_second=1000.0,
        by_id_p99_ms=10.0,
        by_id_p50_ms=2.0,
        by_id_requests_per_second=3000.0,
        redis_forks_during_reads=0,
        replay_seconds=campaigns / 10_000,
        replay_events_per_second=20_000.0,
        replay_peak_rss_mib=rss,
        load_average=[2.0, 2.0, 2.0],
        redis_listpack_settings={"zset-max-listpack-entries": "256"},
    )


def test_the_scale_figures_compare_the_largest_size_with_the_smallest() -> None:
    rows = [
        size_row(10_000, list_p99=10.0, rate=5000.0, rss=100.0, bytes_each=1400.0),
        size_row(100_000, list_p99=11.5, rate=3900.0, rss=130.0, bytes_each=1600.0),
    ]
    by_key = {f.key: f for f in scale.figures(rows, connections=16, seconds=5)}
    assert list(by_key) == list(scale.FIGURE_KEYS)
    # 1600 B against a 500 B document: 3.2 times, over the goal of 3.
    assert by_key["scale_bytes"].ratio == 3.2 and by_key["scale_bytes"].met is False
    assert by_key["scale_list_p99"].ratio == 1.15 and by_key["scale_list_p99"].met is True
    # Beside the figure: the same window with the page cache off, and how often Redis was read.
    listed = by_key["scale_list_p99"].data["per_size"][1]
    assert listed["list_uncached_p99_ms"] == 23.0 and listed["list_index_calls_per_second"] == 16.0
    assert by_key["scale_by_id_p99"].met is True
    # 3900 of 5000 events/s is 22% down: not flat; 130 of 100 MiB is 30% up: grows with the log.
    assert by_key["scale_projector"].ratio == 0.78 and by_key["scale_projector"].met is False
    assert by_key["scale_replay_rss"].met is False
    assert by_key["scale_replay_rss"].data["per_size"][1]["replay_seconds"] == 10.0


def test_a_latency_figure_keeps_the_round_of_median_p99_with_its_own_counts() -> None:
    def round_(p99: float, rate: float) -> WrkResult:
        return WrkResult(requests_per_second=rate, p50_ms=0.6, p99_ms=p99, requests=1, non_2xx=0, errors=0)

    # One stalled round (3.2 ms) does not set the figure; its rate stays with it.
    rounds = [round_(3.2, 100.0), round_(1.5, 200.0), round_(1.7, 300.0)]
    kept, calls = scale.median_round(rounds, [1.0, 2.0, 3.0])
    assert (kept.p99_ms, kept.requests_per_second, calls) == (1.7, 300.0, 3.0)
    # An even count keeps the lower middle; one round is itself.
    assert scale.median_round([round_(2.0, 1.0), round_(1.0, 1.0)], [0.0, 0.0])[0].p99_ms == 1.0
    assert scale.median_round([round_(4.0, 1.0)], [5.0]) == (round_(4.0, 1.0), 5.0)


def test_the_chart_draws_the_scale_curves(tmp_path: Path) -> None:
    rows = [
        size_row(10_000, list_p99=10.0, rate=5000.0, rss=100.0, bytes_each=1400.0),
        size_row(100_000, list_p99=11.0, rate=4900.0, rss=101.0, bytes_each=1400.0),
    ]
    path = chart.draw(scale.figures(rows, connections=16, seconds=5), tmp_path / "scale.png")
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")


def test_the_anti_entropy_figure_seeds_state_documents_as_the_command_side_writes_them() -> None:
    from bench.anti_entropy import state_document

    campaign = state_document("campaign", "campaign-00000001")
    assert campaign["_id"] == "campaign-00000001" and campaign["version"] == 3
    # Every field a campaign's state document has, not a bare {_id, version}.
    assert {"owner_id", "name", "status", "channel", "budget", "tags"} <= campaign.keys()
    first, second = state_document("user", "user-1"), state_document("user", "user-2")
    assert first["email"] != second["email"] and first["password_hash"] and second["version"] == 3


def test_the_host_calibration_times_both_loops_and_reports_their_rates() -> None:
    calibration = host_calibration(rounds=1)

    assert set(calibration) == {"python_loop_steps_per_second", "socket_round_trips_per_second"}
    # Bounds no host of the bench's kind leaves: a million steps in under 10 s and over 1 ms.
    assert 100_000 < calibration["python_loop_steps_per_second"] < 1_000_000_000
    assert 500 < calibration["socket_round_trips_per_second"] < 10_000_000


def _projector_run(per_second: float, instances: int, projectors_cores: float) -> ProjectorRun:
    return ProjectorRun(
        rate=Rate(int(per_second * 10), 10.0),
        wall_seconds=11.0,
        stats_seconds=11.5,
        rss_mib=70.0 * instances,
        instances=instances,
        cores={"projectors": projectors_cores, "redis": 0.45, "kafka": 0.04},
        machine={"busy_cores": 1.7, "steal_cores": 0.0, "unaccounted_cores": 0.1},
    )


def test_the_scaled_out_projector_is_judged_on_the_projector_goal_beside_one_instance() -> None:
    one = _projector_run(9_000, 1, 0.9)
    short = suite._scaled_figure(_projector_run(12_600, 2, 1.2), one, 100_000)
    assert (short.ratio, short.met) == (1.4, False)
    assert short.measured.startswith("12,600 events/s (cores: projectors 1.20, redis 0.45")
    assert "machine busy 1.70" in short.measured
    assert short.limit.startswith("one instance 9,000 events/s (cores: projectors 0.90")
    assert "2 instances" in short.title
    met = suite._scaled_figure(_projector_run(suite.PROJECTOR_EVENTS_GOAL, 2, 1.9), one, 100_000)
    assert met.met is True
    assert met.data["one_instance_cores"] == {"projectors": 0.9, "redis": 0.45, "kafka": 0.04}
