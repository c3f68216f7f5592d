# actsearch: one image for the api, worker, beat and flower services of docker-compose.yml.
#
# torch is installed first from the wheel index named by TORCH_INDEX (CPU by
# default; for the GPU workers build with e.g.
#   docker compose build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126
# ), so the project's loose `torch>=2.2` is then satisfied and pip pulls no
# second, multi-GB build. Untested here: these machines cannot run Docker.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 actsearch
WORKDIR /app

# The largest layer first, so code changes never reinstall it.
RUN pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md ./
COPY actsearch ./actsearch
COPY models ./models
COPY search ./search
COPY store ./store
COPY api ./api
COPY worker ./worker
RUN pip install . "flower>=2.0"

USER actsearch
ENV ACTSEARCH_HOME=/home/actsearch/.actsearch
EXPOSE 8000

# docker-compose.yml picks the role: actsearch serve | worker | beat, or celery flower.
CMD ["actsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
