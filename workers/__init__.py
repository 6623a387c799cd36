"""Celery app, settings, CLI and ops for clientflow: the parts that run processes."""
