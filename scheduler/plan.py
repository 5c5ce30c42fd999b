"""Which slots of a deployment's schedules become runs: pure decisions, from the stored cursors and the time.

Each schedule has a *cursor*: every slot at or before it has been handled (made a run,
or dropped on purpose). A brand-new schedule's cursor starts at the time the scheduler
first sees it, so it never backfills. The due slots are those after the cursor up to now:

- slots at most ``grace`` seconds late are on time and always become runs (a scheduler
  that was a tick slow, or a short Redis outage, must not lose slots);
- older ones were *missed* (every scheduler was down) and follow the deployment's
  ``missed_runs`` policy: ``skip`` drops them, ``run_once`` makes a run of the latest
  one only, ``catch_up`` makes runs of the latest ``catch_up_limit`` of them.

A paused deployment's cursors move past its due slots without making runs, so resuming
it does not count the paused time as missed.
"""

from __future__ import annotations

from dataclasses import dataclass

from envflow.models import DeploymentRecord, ScheduleRecord
from envflow.schedules import latest_slots, slots_between

from .defaults import DEFAULT_GRACE

MAX_SLOTS_PER_PASS = 1000  # bounds one transaction; a longer catch-up continues at the next pass


@dataclass(frozen=True)
class Decision:
    """What to do with one schedule now.

    :param enqueue: slot times that become runs, oldest first.
    :param cursor: the cursor to store, or None to leave it as it is.
    :param missed: whether some due slots were missed (older than the grace period).
    """

    schedule: ScheduleRecord
    enqueue: tuple[float, ...] = ()
    cursor: float | None = None
    missed: bool = False

    @property
    def writes(self) -> bool:
        return bool(self.enqueue) or self.cursor is not None


def decide(
    schedule: ScheduleRecord,
    cursor: float | None,
    now: float,
    *,
    policy: str = "run_once",
    catch_up_limit: int = 10,
    grace: float = DEFAULT_GRACE,
    paused: bool = False,
) -> Decision:
    """Decide one schedule's due slots at ``now``.

    :param cursor: the stored cursor; None for a schedule the scheduler has not seen yet.
    :param policy: ``skip``, ``run_once`` or ``catch_up`` (for slots more than ``grace`` late).
    """
    if cursor is None:
        return Decision(schedule, cursor=now)
    newest = latest_slots(schedule, cursor, now, 1)
    if not newest:
        return Decision(schedule)
    if paused:
        return Decision(schedule, cursor=newest[0])
    late_until = now - grace
    keep = {"skip": 0, "run_once": 1, "catch_up": catch_up_limit}.get(policy, 1)
    missed = latest_slots(schedule, cursor, late_until, min(keep, MAX_SLOTS_PER_PASS) or 1)
    late = missed if keep else []
    on_time = slots_between(schedule, max(cursor, late_until), now, limit=MAX_SLOTS_PER_PASS - len(late))
    enqueue = (*late, *on_time)
    # When the limit cut the on-time slots short, the next pass continues after the last one taken.
    truncated = len(enqueue) >= MAX_SLOTS_PER_PASS and enqueue[-1] < newest[0]
    return Decision(schedule, enqueue=enqueue, cursor=enqueue[-1] if truncated else newest[0], missed=bool(missed))


def decide_deployment(
    record: DeploymentRecord, cursors: dict[str, float], now: float, *, paused: bool, grace: float = DEFAULT_GRACE
) -> list[Decision]:
    """:func:`decide` for every schedule of a deployment, with its policy."""
    return [
        decide(
            s,
            cursors.get(s.id),
            now,
            policy=record.missed_runs,
            catch_up_limit=record.catch_up_limit,
            grace=grace,
            paused=paused,
        )
        for s in record.schedules
    ]


def stale_cursors(record: DeploymentRecord, cursors: dict[str, float]) -> list[str]:
    """Cursors of schedules the deployment no longer has (removed or changed)."""
    ids = {s.id for s in record.schedules}
    return sorted(k for k in cursors if k not in ids)
