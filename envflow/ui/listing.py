"""The runs the UI lists, read in one place: the Runs page, a deployment's runs and its strip.

Runs come from ``Client.runs`` and ``Client.find_runs`` (newest first, filtered, a cursor per
page). Each row also shows the environment the run was made for, read from the deployment
snapshot in its record, so a deployment changed since shows each run's own env. The Runs page's
filters and its place in the pages are all in its URL (:class:`RunsView`), so a view can be
shared, reopened and paged Next and Previous without counting rows.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from ..client import Client
from ..models import RunRecord, RunState

MAX_LIMIT = 500
MAX_BACK = 50  # pages Previous can go back through
SINCE = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}


@dataclass(frozen=True)
class RunRow:
    record: RunRecord
    env: str


def recent_runs(client: Client, deployment: str | None = None, state: str | None = None,
                limit: int = 50) -> list[RunRow]:
    """The newest runs, optionally of one deployment and in one state, with their envs.

    :raises DeploymentNotFound: ``deployment`` is not registered.
    :raises ValueError: ``state`` is not a run state.
    """
    records = recent_records(client, deployment, state, limit)
    return [RunRow(r, env) for r, env in zip(records, run_envs(client, [r.id for r in records]))]


def recent_records(client: Client, deployment: str | None = None, state: str | None = None,
                   limit: int = 50) -> list[RunRecord]:
    """The newest run records (no envs), as :func:`recent_runs` selects them."""
    if deployment:
        client.get_deployment(deployment)
    return client.runs(deployment or None, RunState(state) if state else None, max(1, min(limit, MAX_LIMIT)))


def run_envs(client: Client, run_ids: list[str]) -> list[str]:
    """Each run's environment, as its deployment snapshot names it (one pipelined round trip)."""
    if not run_ids:
        return []
    envs = []
    for spec in client.store.deployments_of(run_ids):
        envs.append(str(spec.env) if spec is not None else "-")
    return envs


@dataclass(frozen=True)
class RunsView:
    """The Runs page as its URL says: filters, page size, this page's cursor and those before it."""

    state: str = ""
    deployment: str = ""
    tag: str = ""
    queue: str = ""
    worker: str = ""
    since: str = ""
    limit: int = 50
    cursor: str = ""
    back: tuple[str, ...] = ()

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> RunsView:
        """From a query string; unknown states and ranges are dropped, the limit kept within bounds."""
        text = {f.name: params.get(f.name, "").strip() for f in fields(cls) if f.name not in ("limit", "back")}
        text["state"] = text["state"].upper() if text["state"].upper() in RunState.__members__ else ""
        text["since"] = text["since"] if text["since"] in SINCE else ""
        try:
            limit = max(1, min(int(params.get("limit", "50")), MAX_LIMIT))
        except ValueError:
            limit = 50
        back = tuple(params.get("back", "").split(",")[-MAX_BACK:]) if "back" in params else ()
        return cls(**text, limit=limit, back=back)

    def query(self, **changes: object) -> str:
        view = replace(self, **changes)  # type: ignore[arg-type]
        items = {f.name: getattr(view, f.name) for f in fields(view)}
        items["back"] = ",".join(view.back) if view.back else None
        items["limit"] = view.limit if view.limit != 50 else None
        return urllib.parse.urlencode({k: v for k, v in items.items() if v not in ("", None)})

    def next_query(self, cursor: str) -> str:
        return self.query(cursor=cursor, back=(*self.back, self.cursor))

    def previous_query(self) -> str | None:
        if not self.cursor:
            return None
        return self.query(cursor=self.back[-1] if self.back else "", back=self.back[:-1])

    @property
    def filtered(self) -> bool:
        return any((self.state, self.deployment, self.tag, self.queue, self.worker, self.since))


def find_rows(client: Client, view: RunsView, now: float | None = None) -> tuple[list[RunRow], str | None]:
    """The page of runs ``view`` asks for, with their envs, and the next page's cursor (None: the last).

    :raises DeploymentNotFound: the deployment filter names no deployment.
    """
    since = (time.time() if now is None else now) - SINCE[view.since] if view.since else None
    page = client.find_runs(deployment=view.deployment or None, tag=view.tag or None, queue=view.queue or None,
                            worker=view.worker or None, state=view.state or None, since=since, limit=view.limit,
                            cursor=view.cursor or None)
    rows = [RunRow(r, env) for r, env in zip(page.runs, run_envs(client, [r.id for r in page.runs]))]
    return rows, page.cursor
