# trainserve: the API by default; the worker runs the same image with another command
# (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first and pinned, in its own layer: it is by far the largest and changes least.
# For a smaller CPU-only image: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1

# Then the project and its other dependencies (torch is already satisfied).
COPY pyproject.toml ./
COPY app ./app
COPY workers ./workers
COPY models ./models
RUN pip install . && rm -rf build ./*.egg-info

COPY migrations ./migrations
COPY alembic.ini ./

# A non-root user. It owns only what the processes write: /data (artefacts on a volume)
# and var/ (the embedded SQLite and file-system broker defaults).
RUN useradd --create-home --uid 1000 trainserve \
    && mkdir -p /data/artifacts var \
    && chown -R trainserve:trainserve /data var
USER trainserve

EXPOSE 8000

# Granian serves the app (bench/serving.py: of the public servers measured, the one whose
# worst case was best; docs/benchmarks.md), its settings from the environment, so compose
# can change them.
ENV GRANIAN_INTERFACE=asgi \
    GRANIAN_HOST=0.0.0.0 \
    GRANIAN_PORT=8000 \
    GRANIAN_LOG_ACCESS_ENABLED=true
CMD ["sh", "-c", "alembic upgrade head && exec granian app.main:app"]
