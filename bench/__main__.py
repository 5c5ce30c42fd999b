"""``python -m bench``: run the benchmark cases, print one table, write the raw samples as JSON.

    python -m bench                 # the full run (a few minutes on 2 cores)
    python -m bench --quick         # CI smoke run, about 2 minutes: asserts only that every case produced numbers
    python -m bench --only dispatch # one case (repeatable)
    python -m bench --peers         # also the peer tool (installed into a throwaway venv)
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .cases import FULL, NAMES, QUICK, Context, Result, load
from .harness import Harness, default_cache_dir
from .report import Row, machine, render, write_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    names = list(NAMES)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and smaller N (CI smoke, about 2 minutes)")
    parser.add_argument("--summary", action="store_true",
                        help="print one line instead of the table (the table goes beside the --json file, as .txt)")
    parser.add_argument("--only", action="append", choices=names + ["peers"], metavar="CASE",
                        help=f"run only this case (repeatable): {', '.join(names)}, peers")
    parser.add_argument("--peers", action="store_true", help="also measure the peer workflow tool (needs PyPI)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"raw samples (default {DEFAULT_JSON})")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help="where venvs are kept between runs (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, Redis data)")
    return parser.parse_args(argv)


def _stop_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop every child


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    # Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited as ignored (background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sizes = QUICK if args.quick else FULL
    selected = args.only or list(NAMES)
    run_peers = args.peers or "peers" in selected
    selected = [name for name in selected if name != "peers"]
    root = Path(tempfile.mkdtemp(prefix="envflow-bench-"))
    harness = Harness(root, args.cache_dir.expanduser(), log)
    results: dict[str, Result] = {}
    failed: dict[str, str] = {}
    started = time.monotonic()
    meta: dict[str, Any] = {"mode": "quick" if args.quick else "full", "sizes": vars(sizes), **machine()}
    try:
        harness.start_redis()
        log(f"redis-server on {harness.url}; venv {harness.venv}; run directory {root}")
        ctx = Context(harness, sizes, args.quick, log)
        todo: list[tuple[str, Any]] = [(name, load(name)) for name in selected]
        if run_peers:
            from .peers import run as run_peer

            todo.append(("peers", run_peer))
        for name, fn in todo:
            log(f"case {name} ...")
            t0 = time.monotonic()
            try:
                results[name] = fn(ctx)
            except Exception as e:  # noqa: BLE001 - one broken case must not hide the others' figures
                failed[name] = f"{type(e).__name__}: {e}"
                log(f"case {name} FAILED:\n{traceback.format_exc()}")
            log(f"case {name} done in {time.monotonic() - t0:.1f}s")
    except (KeyboardInterrupt, SystemExit):
        log("interrupted: stopping every process this run started")
        raise
    finally:
        harness.close()
        meta["seconds"] = round(time.monotonic() - started, 1)
        if failed or args.keep:
            log(f"kept the run's directory (logs, worker output): {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rows: list[Row] = []
    notes: list[str] = []
    for result in results.values():
        rows += result.rows
        notes += result.notes
    for name, error in failed.items():
        rows.append(Row(case=f"{name}: FAILED", envflow=error[:80], met=False))
    notes.append(
        f"{meta['mode']} run, {meta['seconds']}s, Python {meta['python']}, rq {meta['rq']}, {meta['cpus']} CPUs; "
        "bench deployments use stream_output=False (the worker does not echo flow lines into its own log); "
        "workers run with ENVFLOW_HISTORY_MAX_LINES=2000000."
    )
    table = render(rows, notes)
    if args.summary:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.with_suffix(".txt").write_text(table + "\n")
        outcome = f"{len(failed)} FAILED ({', '.join(failed)})" if failed else "every case produced its numbers"
        print(f"bench ({meta['mode']}): {len(results) + len(failed)} cases in {meta['seconds']}s, {outcome}; "
              f"table: {args.json.with_suffix('.txt')}")
    else:
        print(table)
    write_json(args.json, meta, {n: {"raw": r.raw} for n, r in results.items()} | {"failed": failed}, rows, notes)
    log(f"raw samples: {args.json}")
    empty = [name for name, res in results.items() if not res.rows or any("n/a" in row.envflow for row in res.rows)]
    if failed or empty:
        log(f"cases without figures: {', '.join([*failed, *empty])}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
