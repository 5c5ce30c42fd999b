"""Schedules a deployment can carry: ``Cron`` and ``Interval``.

Slot arithmetic is pure (no Redis, no clock): :func:`slots_between` lists the slot
times of a schedule in a window, and the scheduler service decides which to enqueue.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .models import ScheduleRecord


class Cron(BaseModel):
    """A five-field cron schedule, evaluated in ``timezone`` (DST as that zone defines it).

    :param expression: e.g. ``"*/5 * * * *"``.
    :param timezone: an IANA zone name such as ``"Europe/Berlin"``; default UTC.
    """

    model_config = ConfigDict(frozen=True)

    expression: str
    timezone: str = "UTC"

    def __init__(self, expression: str | None = None, /, **data: object) -> None:
        if expression is not None:
            data["expression"] = expression
        super().__init__(**data)

    @field_validator("expression")
    @classmethod
    def _check_expression(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value.split(" ")) != 5 or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}: expected five fields such as '*/5 * * * *'")
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
    """

    model_config = ConfigDict(frozen=True)

    seconds: float = 0
    minutes: float = 0
    hours: float = 0
    anchor: datetime | None = Field(None)

    @model_validator(mode="after")
    def _check_positive(self) -> Interval:
        if self.total_seconds <= 0 or not math.isfinite(self.total_seconds):
            raise ValueError("an interval must be positive, e.g. Interval(seconds=30)")
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


Schedule = Cron | Interval


def describe(schedule: ScheduleRecord) -> str:
    if schedule.kind == "cron":
        return f"cron {schedule.cron!r} ({schedule.timezone})"
    return f"every {schedule.seconds:g}s"


def slots_between(schedule: ScheduleRecord, after: float, until: float, limit: int = 1000) -> list[float]:
    """Slot times ``t`` with ``after < t <= until`` (Unix seconds), oldest first, at most ``limit``."""
    slots: list[float] = []
    if schedule.kind == "interval":
        step, anchor = schedule.seconds or 1.0, schedule.anchor or 0.0
        k = math.floor((after - anchor) / step) + 1
        while len(slots) < limit:
            t = anchor + k * step
            if t > until:
                break
            if t > after:
                slots.append(t)
            k += 1
        return slots
    zone = ZoneInfo(schedule.timezone)
    start = datetime.fromtimestamp(after, tz=zone)
    it = croniter(schedule.cron, start)
    while len(slots) < limit:
        t = it.get_next(datetime).timestamp()
        if t > until:
            break
        slots.append(t)
    return slots


def next_slot(schedule: ScheduleRecord, after: float) -> float:
    """The first slot strictly after ``after``."""
    horizon = after + 400 * 24 * 3600
    found = slots_between(schedule, after, horizon, limit=1)
    return found[0] if found else math.inf


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


ONE_DAY = timedelta(days=1)
