"""Thin Celery tasks: decode the message, call a service, handle retries. Nothing else."""
