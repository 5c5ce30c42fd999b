"""envflow's worker service: env resolution and activation, flow execution, streaming."""
