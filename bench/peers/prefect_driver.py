"""Runs inside the peer tool's throwaway venv (stdlib + prefect only); prints one JSON object.

    python prefect_driver.py setup FLOW_DIR          -> {"deployment_id": ...}
    python prefect_driver.py dispatch DEPLOYMENT_ID N -> {"first_line": [...], "end": [...]}
    python prefect_driver.py throughput DEPLOYMENT_ID N -> {"seconds": ...}

"first line" is the flow's printed line read back through the API (the run's logs, with
log_prints=True): the caller-side view of output the peer offers; "end" is a final state
read back. Both are polled every POLL seconds, the only way the peer's API offers them.
"""

import json
import sys
import time

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

POOL = "bench"
POLL = 0.02
TIMEOUT = 300


def setup(flow_dir):
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except Exception as e:  # noqa: BLE001 - already there from an earlier call
            if "already exists" not in str(e):
                raise
    deployment_id = flow.from_source(source=flow_dir, entrypoint="hello_prefect.py:hello").deploy(
        name="bench", work_pool_name=POOL, print_next_steps=False
    )
    return {"deployment_id": str(deployment_id)}


def dispatch(deployment_id, n):
    first, end = [], []
    with get_client(sync_client=True) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            run = client.create_flow_run_from_deployment(deployment_id)
            t_first = t_end = None
            deadline = time.monotonic() + TIMEOUT
            while (t_first is None or t_end is None) and time.monotonic() < deadline:
                if t_first is None:
                    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
                    if any("hello world" in log.message for log in logs):
                        t_first = time.perf_counter() - t0
                if t_end is None:
                    state = client.read_flow_run(run.id).state
                    if state is not None and state.is_final():
                        if not state.is_completed():
                            raise RuntimeError(f"flow run {run.id} ended {state.type}")
                        t_end = time.perf_counter() - t0
                time.sleep(POLL)
            if t_first is None or t_end is None:
                raise RuntimeError(f"flow run {run.id} did not finish within {TIMEOUT}s")
            first.append(t_first)
            end.append(t_end)
    return {"first_line": first, "end": end}


def throughput(deployment_id, n):
    with get_client(sync_client=True) as client:
        t0 = time.perf_counter()
        ids = [client.create_flow_run_from_deployment(deployment_id).id for _ in range(n)]
        deadline = time.monotonic() + TIMEOUT + n * 10
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=n)
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) == n:
                bad = [r for r in final if not r.state.is_completed()]
                if bad:
                    raise RuntimeError(f"{len(bad)} flow runs did not complete")
                return {"seconds": time.perf_counter() - t0}
            time.sleep(0.1)
    raise RuntimeError(f"{n} flow runs did not finish in time")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "setup":
        out = setup(sys.argv[2])
    elif command == "dispatch":
        out = dispatch(sys.argv[2], int(sys.argv[3]))
    else:
        out = throughput(sys.argv[2], int(sys.argv[3]))
    print(json.dumps(out))
