"""``envflow hook ...``: site-wide hooks (every deployment's runs fire them) and hooks' deliveries."""

from __future__ import annotations

import time
from typing import Any

import click

from ..hook_spec import HOOK_EVENTS
from .base import ago, emit_json, get_client, printable, status, table


@click.group("hook")
def hook() -> None:
    """Site-wide hooks, and what every hook delivered (docs/hooks.md)."""


def _store():  # type: ignore[no-untyped-def]
    from ..store.hooks import hook_store

    client = get_client()
    return hook_store(client.redis, client.settings)


def _shown(url: str) -> str:
    return get_client().settings.redactor.text(url)


@hook.command("add")
@click.option("--on", "events", required=True, help=f"','-separated events: {', '.join(HOOK_EVENTS)}.")
@click.option("--webhook", required=True, help="The http(s) URL each event is POSTed to (signed).")
@click.option("--tag", "tags", multiple=True, help="Only runs of deployments with this tag (repeatable).")
def add(events: str, webhook: str, tags: tuple[str, ...]) -> None:
    """Add a hook every deployment's runs fire (those with one of the tags, given --tag)."""
    from pydantic import ValidationError

    from ..errors import ConfigError
    from ..hook_spec import Hook

    try:
        spec = Hook(on=events, webhook=webhook, tags=list(tags))  # type: ignore[arg-type]  # a string is parsed
    except ValidationError as e:
        raise ConfigError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
    from ..connection import wrap_errors

    with wrap_errors(get_client().redis):
        hook_id = _store().site.add(spec)
    click.echo(f"added hook {hook_id}: on {','.join(spec.on)}: webhook {printable(_shown(webhook))}")


@hook.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List the site-wide hooks."""
    hooks = _store().site.all()
    rows = [{"id": i, "on": h.on, "webhook": _shown(h.webhook or ""), "tags": h.tags} for i, h in hooks.items()]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        status("no site-wide hooks: `envflow hook add --on FAILED,CRASHED --webhook URL`")
        return
    table(["ID", "ON", "WEBHOOK", "TAGS"], [[r["id"], ",".join(r["on"]), r["webhook"], ",".join(r["tags"]) or "-"]
                                            for r in rows])


@hook.command("rm")
@click.argument("hook_id")
def rm(hook_id: str) -> None:
    """Remove a site-wide hook (events already written are still delivered)."""
    from ..errors import ConfigError

    if not _store().site.remove(hook_id):
        raise ConfigError(f"no site-wide hook {hook_id!r}; list them with `envflow hook ls`")
    click.echo(f"removed hook {printable(hook_id)}")


def _row(d: dict[str, Any]) -> dict[str, Any]:
    target = _shown(d.get("target", "")) if d.get("kind") == "webhook" else d.get("target", "")
    return {"id": d["id"], "run_id": d.get("run", ""), "event": d.get("state", ""), "kind": d.get("kind", ""),
            "target": target, "status": d.get("status", ""), "tries": int(d.get("tries") or 0),
            "codes": d.get("codes", ""), "last_error": d.get("last_error") or None,
            "created_at": float(d.get("created") or 0),
            "next_try_at": float(d["next_at"]) if d.get("next_at") else None}


@hook.command("deliveries")
@click.option("--failed", is_flag=True, help="Only those that gave up (the dead-letter list).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deliveries(failed: bool, limit: int, as_json: bool) -> None:
    """List hooks' deliveries, newest first: their tries, the answers' codes and the last error."""
    rows = [_row(d) for d in _store().deliveries(limit, failed=failed)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        status("no failed deliveries" if failed else "no deliveries yet")
        return
    now = time.time()
    table(["ID", "RUN", "EVENT", "TARGET", "STATUS", "TRIES", "CODES", "LAST ERROR", "CREATED"], [
        [r["id"], r["run_id"][:8], r["event"], r["kind"] + " " + r["target"],
         r["status"] + (f" (next in {r['next_try_at'] - now:.0f}s)" if r["next_try_at"] else ""), str(r["tries"]),
         r["codes"] or "-", printable(r["last_error"] or "-"), ago(r["created_at"])]
        for r in rows
    ])


@hook.command("replay")
@click.argument("event_id")
def replay(event_id: str) -> None:
    """Send a delivery (ID from `hook deliveries`) again, or every delivery of an event (its ID before the dot).
    A run hook that already started its run starts none again."""
    ids = _store().replay(event_id)
    click.echo(f"replaying {', '.join(ids)}")
