"""envflow's scheduler service: turns deployment schedules into runs, and reaps crashed runs."""
