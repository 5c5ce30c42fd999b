"""What the suites share: the processes they start and watch, the Pythons and envs they make, flow
files and deployments, and a driver of the run protocol without a worker."""
