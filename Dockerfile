# One image for the migrate step, the workers, Flower and the exporter (docker-compose.yml builds
# it once as clientflow:local). Only the packages below are copied in: never .env or var/.
# A pinned base: a rebuild gets the same Python and Debian, not whatever 3.11-slim is that day.
FROM python:3.11.11-slim-bookworm
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
