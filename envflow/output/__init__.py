"""A run's output: its format (``format.py``), the worker's writer (``writer.py``) and the followers'
reader (``reader.py``). Everything that writes or reads a run's output goes through here."""

from .format import AttemptEnd, Entry, OutputLine, Record, dropped_before
from .reader import OutputFollower, ends_with_attempt_end

__all__ = ["AttemptEnd", "Entry", "OutputFollower", "OutputLine", "Record", "dropped_before", "ends_with_attempt_end"]
