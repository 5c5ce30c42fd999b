"""Schedules a deployment can carry: ``Cron`` and ``Interval``.

Slot arithmetic is pure (no Redis, no clock): :func:`slots_between` lists the slot
times of a schedule in a window, :func:`latest_slots` the last few of one, and the
scheduler service decides which to enqueue. Times are Unix seconds.

Cron slots follow the zone's wall clock (croniter does the parsing and iterating). When
the clock skips an hour, a slot inside it moves to the first time after the gap; when
the clock repeats an hour, expressions with a fixed hour fire once (at the first pass)
and those with ``*`` as hour fire on both passes, as Vixie cron does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ScheduleError
from .models import ScheduleRecord

# The shortest interval a schedule may have, in seconds.
MIN_INTERVAL = 1.0
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _raise_clear(error: ValidationError, what: str) -> None:
    messages = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())
    raise ScheduleError(f"{what}: {messages}") from None


class Cron(BaseModel):
    """A five-field cron schedule, evaluated in ``timezone`` (DST as that zone defines it).

    :param expression: e.g. ``"*/5 * * * *"`` (minute hour day-of-month month day-of-week),
        or an alias such as ``"@daily"``.
    :param timezone: an IANA zone name such as ``"Europe/Berlin"``; default UTC.
    :raises ScheduleError: (a ``ConfigError``) the expression or the zone is invalid.
    """

    model_config = ConfigDict(frozen=True)

    expression: str
    timezone: str = "UTC"

    def __init__(self, expression: str | None = None, /, **data: Any) -> None:
        if expression is not None:
            data["expression"] = expression
        try:
            super().__init__(**data)
        except ValidationError as e:
            _raise_clear(e, "invalid cron schedule")

    @field_validator("expression")
    @classmethod
    def _check_expression(cls, value: str) -> str:
        value = " ".join(str(value).split())
        alias = value.lower() in CRON_ALIASES
        if not alias and (len(value.split(" ")) != 5 or not croniter.is_valid(value)):
            raise ValueError(f"invalid cron expression {value!r}: expected five fields such as '*/5 * * * *'")
        try:
            croniter(value, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(float)
        except CroniterError:
            raise ValueError(f"cron expression {value!r} never matches a date") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}: use an IANA name such as 'Europe/Berlin'") from None
        return value

    def to_record(self) -> ScheduleRecord:
        ident = hashlib.sha1(f"cron|{self.expression}|{self.timezone}".encode()).hexdigest()[:12]
        return ScheduleRecord(kind="cron", id=ident, cron=self.expression, timezone=self.timezone)


class Interval(BaseModel):
    """Every ``seconds`` (+ ``minutes``, ``hours``), counted from ``anchor`` (default: the epoch).

    :param anchor: a datetime the slots line up with (naive means UTC).
    :raises ScheduleError: (a ``ConfigError``) the interval is not positive.
    """

    model_config = ConfigDict(frozen=True)

    seconds: float = 0
    minutes: float = 0
    hours: float = 0
    anchor: datetime | None = Field(None)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            _raise_clear(e, "invalid interval schedule")

    @model_validator(mode="after")
    def _check_positive(self) -> Interval:
        parts = (self.seconds, self.minutes, self.hours)
        given = ", ".join(f"{n}={v:g}" for n, v in zip(("seconds", "minutes", "hours"), parts) if v) or "0 seconds"
        if not all(math.isfinite(p) for p in parts) or min(parts) < 0 or self.total_seconds <= 0:
            raise ValueError(f"an interval must be positive, e.g. Interval(seconds=30); got {given}")
        if self.total_seconds < MIN_INTERVAL:  # a tighter one floods Redis with runs
            raise ValueError(f"an interval must be at least {MIN_INTERVAL:g} second; got {given}")
        return self

    @property
    def total_seconds(self) -> float:
        return self.seconds + 60 * self.minutes + 3600 * self.hours

    def to_record(self) -> ScheduleRecord:
        anchor = 0.0
        if self.anchor is not None:
            a = self.anchor if self.anchor.tzinfo else self.anchor.replace(tzinfo=timezone.utc)
            anchor = a.timestamp()
        ident = hashlib.sha1(f"interval|{self.total_seconds}|{anchor}".encode()).hexdigest()[:12]
        return ScheduleRecord(kind="interval", id=ident, seconds=self.total_seconds, anchor=anchor)


def describe(schedule: ScheduleRecord) -> str:
    if schedule.kind == "cron":
        return f"cron {schedule.cron!r} ({schedule.timezone})"
    return f"every {schedule.seconds:g}s"


def _cron_times(schedule: ScheduleRecord, start: float, backwards: bool = False) -> Iterator[float]:
    """Cron slot times strictly after (or, ``backwards``, before) ``start``, without repeated-hour doubles."""
    zone = ZoneInfo(schedule.timezone)
    assert schedule.cron is not None
    it = croniter(schedule.cron, datetime.fromtimestamp(start, tz=zone))
    fixed_hour = it.expanded[1] != ["*"]
    last = start
    while True:
        try:
            t = (it.get_prev if backwards else it.get_next)(datetime).timestamp()
        except CroniterError:
            return
        # croniter keeps real time moving, but guard against any step the wrong way.
        if (t >= last) if backwards else (t <= last):
            continue
        last = t
        if fixed_hour and datetime.fromtimestamp(t, tz=zone).fold == 1:
            continue  # the second pass through a repeated hour: a fixed-hour job already ran
        yield t


def slots_between(schedule: ScheduleRecord, after: float, until: float, limit: int = 1000) -> list[float]:
    """Slot times ``t`` with ``after < t <= until``, oldest first, at most ``limit`` (the oldest ones)."""
    slots: list[float] = []
    if until <= after or limit <= 0:
        return slots
    if schedule.kind == "interval":
        step, anchor = schedule.seconds or 1.0, schedule.anchor or 0.0
        k = math.floor((after - anchor) / step)
        while len(slots) < limit:
            t = anchor + k * step
            if t > until:
                break
            if t > after:
                slots.append(t)
            k += 1
        return slots
    for t in _cron_times(schedule, after):
        if t > until or len(slots) >= limit:
            break
        slots.append(t)
    return slots


def latest_slots(schedule: ScheduleRecord, after: float, until: float, count: int) -> list[float]:
    """The last ``count`` slot times ``t`` with ``after < t <= until``, oldest first.

    Unlike :func:`slots_between`, the cost does not grow with the width of the window.
    """
    if until <= after or count <= 0:
        return []
    if schedule.kind == "interval":
        step, anchor = schedule.seconds or 1.0, schedule.anchor or 0.0
        k = math.floor((until - anchor) / step) + 1
        found: list[float] = []
        while len(found) < count:
            t = anchor + k * step
            if t <= after:
                break
            if t <= until:
                found.append(t)
            k -= 1
        return found[::-1]
    found = []
    # Cron slots fall on whole seconds; start just past ``until`` so a slot at ``until`` counts.
    for t in _cron_times(schedule, math.floor(until) + 1, backwards=True):
        if t <= after or len(found) >= count:
            break
        if t <= until:
            found.append(t)
    return found[::-1]


def next_slot(schedule: ScheduleRecord, after: float) -> float:
    """The first slot strictly after ``after`` (``math.inf`` if there is none)."""
    found = upcoming(schedule, after, 1)
    return found[0] if found else math.inf


def upcoming(schedule: ScheduleRecord, after: float, count: int) -> list[float]:
    """The next ``count`` slots strictly after ``after``, oldest first."""
    if schedule.kind == "interval":
        step = schedule.seconds or 1.0
        return slots_between(schedule, after, after + step * (count + 1), limit=count)
    found: list[float] = []
    for t in _cron_times(schedule, after):
        if len(found) >= count:
            break
        found.append(t)
    return found


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)

