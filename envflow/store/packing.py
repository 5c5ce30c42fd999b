"""The largest output history packed into one string when its run ends (``_output.lua``'s ``finalize``).

The store renders these into its scripts, and ``envflow/output/format.py`` reads what they packed:
a stream's own overhead (about 4.7 KB) is most of what a short run costs.
"""

PACK_MAX_BYTES = 4096
PACK_MAX_ENTRIES = 64
