"""envflow's command line: ``envflow <group> <command>``; see ``envflow --help``."""
