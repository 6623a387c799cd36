"""Operations: what the people on call read (status, Prometheus metrics, health, JSON logs)."""
