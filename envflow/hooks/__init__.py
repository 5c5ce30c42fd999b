"""Delivering hooks: the outbox's events become signed webhooks and follow-on runs, at least once.

``payload.py`` builds a webhook's body, ``sender.py`` makes one bounded HTTP request, ``deliverer.py`` reads
the outbox and retries (``envflow/store/hooks.py`` keeps it all in Redis), and ``service.py`` runs a deliverer
in a thread of its own: the scheduler's always, a worker's while no scheduler delivers.
"""
