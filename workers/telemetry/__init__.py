"""What the worker writes about its own work: JSON logs and task outcome counters."""
