"""envflow's benchmark suite: every envflow figure beside its baseline, measured in one run.

Run it as ``python -m bench`` (``--quick`` for the CI smoke run, ``--only CASE`` for one case);
``bench/README.md`` says what each case measures and how to read the ratios.
"""
