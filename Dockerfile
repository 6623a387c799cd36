# One image for the migrate step, the workers, Flower and the exporter (docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY workers workers
COPY tasks tasks
COPY models models
COPY services services
COPY templates templates
RUN pip install --no-cache-dir -c constraints.txt '.[flower]' \
    && useradd --create-home --uid 10001 clientflow
USER clientflow
CMD ["celery", "-A", "workers.app", "worker", "--loglevel", "INFO"]
