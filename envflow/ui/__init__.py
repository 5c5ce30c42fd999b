"""envflow's web UI and Prometheus metrics (``envflow ui``): runs, live output, deployments, workers.

It needs the ``ui`` extra (``pip install 'envflow[ui]'``: Starlette, uvicorn, Jinja2,
prometheus_client). Nothing outside this package imports it, so workers and the CLI never
load that stack.
"""
