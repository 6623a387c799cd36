"""Business rules as plain functions: no Celery here, so all of it runs without a broker."""
