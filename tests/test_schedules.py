"""Schedule arithmetic and missed-slot decisions: pure functions, an injected clock, no Redis, no sleeping."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from envflow import flow
from envflow.deployment_files import load_file
from envflow.deployments import Deployment
from envflow.errors import ConfigError
from envflow.models import DeploymentRecord, ScheduleRecord
from envflow.scheduler.plan import MAX_SLOTS_PER_PASS, decide, decide_deployment, stale_cursors
from envflow.schedules import Cron, Interval, latest_slots, next_slot, slots_between, upcoming

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, tz: timezone | ZoneInfo = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def local(t: float) -> str:
    return datetime.fromtimestamp(t, BERLIN).strftime("%d %H:%M%z")


@flow
def noop() -> None:
    pass


# Intervals


def test_interval_slots_line_up_with_the_anchor():
    every10 = Interval(minutes=10, anchor=datetime(2024, 1, 1, 0, 3, tzinfo=UTC)).to_record()
    start = ts(2024, 5, 1, 12, 0)
    slots = slots_between(every10, start, start + 3600)
    assert [utc(t).strftime("%H:%M") for t in slots] == ["12:03", "12:13", "12:23", "12:33", "12:43", "12:53"]
    # the window is (after, until]: a slot at `after` is not in it, one at `until` is
    assert slots_between(every10, slots[0], slots[2]) == slots[1:3]
    assert slots_between(every10, start, start + 3600, limit=2) == slots[:2]
    assert next_slot(every10, slots[0]) == slots[1]
    assert upcoming(every10, start, 3) == slots[:3]


def test_interval_defaults_and_identity():
    half_minute = Interval(seconds=30).to_record()
    assert [t % 30 for t in slots_between(half_minute, 1_000_007, 1_000_100)] == [0, 0, 0]
    assert Interval(hours=1, minutes=30).to_record().seconds == 5400
    naive = Interval(minutes=5, anchor=datetime(2024, 1, 1, 0, 1)).to_record()
    aware = Interval(minutes=5, anchor=datetime(2024, 1, 1, 0, 1, tzinfo=UTC)).to_record()
    assert naive == aware  # naive anchors are UTC; the same schedule has the same id
    assert Interval(minutes=5).to_record().id != aware.id
    fractional = Interval(seconds=1.5).to_record()
    assert slots_between(fractional, 0, 6) == [1.5, 3.0, 4.5, 6.0]


def test_latest_slots_is_the_tail_of_slots_between():
    rng = random.Random(7)
    schedules = [
        Interval(seconds=7, anchor=datetime(2024, 1, 1, 0, 0, 3, tzinfo=UTC)).to_record(),
        Interval(seconds=2.5).to_record(),
        Cron("*/15 * * * *", timezone="Europe/Berlin").to_record(),
        Cron("30 2 * * *", timezone="Europe/Berlin").to_record(),
        Cron("0 * * * *", timezone="America/New_York").to_record(),
    ]
    base = ts(2024, 10, 26, 20, 0)  # around the European fall-back night
    for _ in range(60):
        s = rng.choice(schedules)
        after = base + rng.uniform(0, 86400)
        until = after + rng.uniform(0, 86400 if s.kind == "cron" else 200)
        every = slots_between(s, after, until, limit=100_000)
        for count in (1, 3, 50):
            assert latest_slots(s, after, until, count) == every[-count:]
    assert latest_slots(schedules[0], 10, 10, 5) == [] and slots_between(schedules[0], 10, 5) == []


# Cron


def test_cron_follows_the_timezone_wall_clock():
    nine = Cron("0 9 * * *", timezone="Europe/Berlin").to_record()
    winter = slots_between(nine, ts(2024, 1, 10), ts(2024, 1, 12))
    summer = slots_between(nine, ts(2024, 7, 10), ts(2024, 7, 12))
    assert [utc(t).hour for t in winter] == [8, 8] and [utc(t).hour for t in summer] == [7, 7]
    assert Cron("0 9 * * *").to_record().timezone == "UTC"
    assert Cron(" */5  * * * * ").expression == "*/5 * * * *"
    assert [utc(t).minute for t in upcoming(Cron("*/20 * * * *").to_record(), ts(2024, 1, 1, 10, 0), 3)] == [20, 40, 0]


def test_cron_across_spring_forward_in_berlin():
    # 2024-03-31: at 02:00 CET the clock jumps to 03:00 CEST; 02:xx does not exist
    day = (ts(2024, 3, 31, tz=BERLIN) - 1, ts(2024, 4, 1, tz=BERLIN) - 1)
    hourly = slots_between(Cron("0 * * * *", timezone="Europe/Berlin").to_record(), *day)
    assert len(hourly) == 23 and all(b - a == 3600 for a, b in zip(hourly, hourly[1:]))
    daily = Cron("30 2 * * *", timezone="Europe/Berlin").to_record()
    # the skipped 02:30 runs once, at the first time after the gap
    assert [local(t) for t in slots_between(daily, ts(2024, 3, 30), ts(2024, 4, 2))] == [
        "30 02:30+0100", "31 03:00+0200", "01 02:30+0200"
    ]
    halfhourly = slots_between(Cron("*/30 * * * *", timezone="Europe/Berlin").to_record(), ts(2024, 3, 31, 0, 45), ts(2024, 3, 31, 1, 30))
    assert [local(t) for t in halfhourly] == ["31 03:00+0200", "31 03:30+0200"]
    assert halfhourly[0] - ts(2024, 3, 31, 0, 30) == 1800  # 01:30 CET -> 03:00 CEST is half an hour


def test_cron_across_fall_back_in_berlin():
    # 2024-10-27: at 03:00 CEST the clock goes back to 02:00 CET; 02:xx happens twice
    day = (ts(2024, 10, 27, tz=BERLIN) - 1, ts(2024, 10, 28, tz=BERLIN) - 1)
    hourly = slots_between(Cron("0 * * * *", timezone="Europe/Berlin").to_record(), *day)
    assert len(hourly) == 25 and all(b - a == 3600 for a, b in zip(hourly, hourly[1:]))
    daily = Cron("30 2 * * *", timezone="Europe/Berlin").to_record()
    # a fixed-hour job runs once, at the first 02:30
    assert [local(t) for t in slots_between(daily, ts(2024, 10, 26), ts(2024, 10, 29))] == [
        "26 02:30+0200", "27 02:30+0200", "28 02:30+0100"
    ]
    halfhourly = Cron("*/30 * * * *", timezone="Europe/Berlin").to_record()
    night = slots_between(halfhourly, ts(2024, 10, 26, 23, 45), ts(2024, 10, 27, 2, 0))
    assert [local(t) for t in night] == [
        "27 02:00+0200", "27 02:30+0200", "27 02:00+0100", "27 02:30+0100", "27 03:00+0100"
    ]
    # starting inside the repeated hour (second pass) neither goes back nor repeats
    inside = slots_between(halfhourly, ts(2024, 10, 27, 1, 10), ts(2024, 10, 27, 2, 0))
    assert [local(t) for t in inside] == ["27 02:30+0100", "27 03:00+0100"]
    assert slots_between(daily, ts(2024, 10, 27, 1, 0), ts(2024, 10, 27, 2, 0)) == []


# Bad input: a clear ConfigError when the deployment is created


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Cron("61 * * * *"), "invalid cron expression '61 \\* \\* \\* \\*'"),
        (lambda: Cron("not a cron"), "expected five fields"),
        (lambda: Cron("* * * * * *"), "expected five fields"),
        (lambda: Cron("0 0 31 2 *"), "never matches"),
        (lambda: Cron("0 9 * * *", timezone="Europe/Berlim"), "unknown timezone 'Europe/Berlim'"),
        (lambda: Interval(seconds=0), "must be positive"),
        (lambda: Interval(), "must be positive"),
        (lambda: Interval(minutes=-5), "must be positive.*minutes=-5"),
        (lambda: Interval(minutes=1, seconds=-70), "must be positive"),
        (lambda: Interval(seconds=1e-6), "must be at least 1 second"),
    ],
)
def test_bad_schedules_fail_when_the_deployment_is_created(make, message):
    with pytest.raises(ConfigError, match=message):
        Deployment(name="bad", flow=noop, schedule=make())


def test_a_schedule_that_is_not_one_is_a_config_error():
    with pytest.raises(ConfigError, match="schedule"):
        Deployment(name="bad", flow=noop, schedule="*/5 * * * *")
    good = Deployment(name="good", flow=noop, schedule=[Cron("*/5 * * * *"), Interval(seconds=30)])
    assert good.fields is not None and len(good.fields.schedules) == 2


def test_bad_schedule_in_yaml_is_reported_per_deployment(tmp_path: Path):
    path = tmp_path / "deployments.yaml"
    path.write_text(
        "- name: ok\n  flow_location: flows.py\n  schedule: {interval: 30}\n"
        "- name: tz\n  flow_location: flows.py\n  schedule: {cron: '0 9 * * *', timezone: Mars/Olympus}\n"
        "- name: zero\n  flow_location: flows.py\n  schedule: {interval: 0}\n"
    )
    loaded = load_file(path)
    assert [d.name for d in loaded.deployments] == ["ok"]
    assert len(loaded.errors) == 2
    assert "'tz'" in loaded.errors[0] and "unknown timezone 'Mars/Olympus'" in loaded.errors[0]
    assert "'zero'" in loaded.errors[1] and "must be positive" in loaded.errors[1]


# Missed-slot decisions (scheduler/plan.py), with an injected clock

EVERY_10S = Interval(seconds=10).to_record()


def test_a_new_schedule_starts_from_now():
    d = decide(EVERY_10S, None, 1005.0)
    assert d.enqueue == () and d.cursor == 1005.0 and d.writes


def test_due_slots_within_the_grace_period_all_run():
    assert decide(EVERY_10S, 1000.0, 1009.9).writes is False
    d = decide(EVERY_10S, 1000.0, 1010.2)
    assert d.enqueue == (1010.0,) and d.cursor == 1010.0 and not d.missed
    # a scheduler that was a few slots behind (slow tick, Redis blip) loses none of them
    d = decide(Interval(seconds=1).to_record(), 1000.0, 1007.5, policy="skip", grace=10)
    assert d.enqueue == tuple(float(t) for t in range(1001, 1008)) and not d.missed


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", (1100.0,)),
        ("run_once", (1090.0, 1100.0)),
        ("catch_up", (1070.0, 1080.0, 1090.0, 1100.0)),
    ],
)
def test_missed_slot_policies_after_downtime(policy, expected):
    # down from 1000 to 1100: 1010..1090 are more than 10 s late, 1100 is on time
    d = decide(EVERY_10S, 1000.0, 1100.5, policy=policy, catch_up_limit=3, grace=10)
    assert d.enqueue == expected and d.cursor == 1100.0 and d.missed


@pytest.mark.parametrize(("policy", "expected"), [("skip", ()), ("run_once", (960.0,)), ("catch_up", (900.0, 960.0))])
def test_missed_slot_policies_with_nothing_on_time(policy, expected):
    every_minute = Interval(minutes=1).to_record()
    d = decide(every_minute, 0.0, 1000.0, policy=policy, catch_up_limit=2, grace=10)
    assert d.enqueue == expected and d.cursor == 960.0 and d.missed


def test_missed_daily_cron_runs_once_after_three_days():
    daily = Cron("0 6 * * *", timezone="Europe/Berlin").to_record()
    down, back = ts(2024, 6, 1, 12, 0), ts(2024, 6, 4, 12, 0)
    d = decide(daily, down, back)
    assert [local(t) for t in d.enqueue] == ["04 06:00+0200"] and d.missed
    d = decide(daily, down, back, policy="catch_up", catch_up_limit=10)
    assert [local(t) for t in d.enqueue] == ["02 06:00+0200", "03 06:00+0200", "04 06:00+0200"]


def test_paused_schedules_move_their_cursor_without_runs():
    d = decide(EVERY_10S, 1000.0, 1100.5, paused=True)
    assert d.enqueue == () and d.cursor == 1100.0
    # once resumed, the paused time is not counted as missed
    d = decide(EVERY_10S, 1100.0, 1110.5, policy="catch_up", catch_up_limit=100)
    assert d.enqueue == (1110.0,) and not d.missed


def test_one_pass_is_bounded_and_the_next_one_continues():
    every_second = Interval(seconds=1).to_record()
    first = decide(every_second, 0.0, 5000.0, grace=5000)
    assert len(first.enqueue) == MAX_SLOTS_PER_PASS and first.cursor == first.enqueue[-1] == 1000.0
    second = decide(every_second, first.cursor, 5000.0, grace=5000)
    assert second.enqueue[0] == 1001.0
    huge = decide(every_second, 0.0, 50_000.0, policy="catch_up", catch_up_limit=100_000)
    assert len(huge.enqueue) == MAX_SLOTS_PER_PASS and huge.cursor == huge.enqueue[-1] == 49_990.0
    assert decide(every_second, huge.cursor, 50_000.0).enqueue == tuple(float(t) for t in range(49_991, 50_001))


def test_deployment_decisions_use_its_policy_and_drop_stale_cursors():
    record = DeploymentRecord(
        name="noop/x", deployment="x", flow_name="noop", flow_path="/f.py",
        schedules=[EVERY_10S, Cron("* * * * *").to_record()], missed_runs="skip",
    )
    cursors = {EVERY_10S.id: 1000.0, "gone": 5.0}
    first, second = decide_deployment(record, cursors, 1100.5, paused=False, grace=10)
    assert first.enqueue == (1100.0,) and first.missed
    assert second.enqueue == () and second.cursor == 1100.5  # new: starts from now
    assert stale_cursors(record, cursors) == ["gone"]


def test_clock_going_backwards_enqueues_nothing():
    assert decide(EVERY_10S, 2000.0, 1500.0).writes is False
    assert decide(EVERY_10S, 2000.0, 1500.0, paused=True).writes is False


def test_slot_times_are_exact_for_long_runs():
    # the slot a schedule yields is the same whatever window it is computed from
    # (a record of 0.1 s: stored before intervals had a lower bound, its slots are still exact)
    s = ScheduleRecord(kind="interval", id="tenth", seconds=0.1, anchor=ts(2024, 1, 1))
    start = ts(2024, 1, 1) + timedelta(days=300).total_seconds()
    whole = slots_between(s, start, start + 5)
    pieces = [t for i in range(10) for t in slots_between(s, start + i * 0.5, start + (i + 1) * 0.5)]
    assert pieces == whole and len(set(round(t * 1000) for t in whole)) == len(whole) == 50
