# The breaker service. Stateless: all breaker state lives in Redis (REDIS_URL).
# Installed from the lock file (uv.lock, hashes checked), as `make run` does: the image built tomorrow runs the
# versions that passed the tests today. uv itself comes pinned with hashes from requirements-bootstrap.txt.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BREAKER_HOST=0.0.0.0 \
    BREAKER_PORT=8080 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH

WORKDIR /app
COPY requirements-bootstrap.txt uv.lock pyproject.toml README.md LICENSE ./
COPY client/ client/
COPY breaker_service/ breaker_service/
RUN pip install --no-cache-dir --require-hashes -r requirements-bootstrap.txt \
    && uv sync --frozen --no-dev --no-editable --no-cache --package breaker-service \
    && pip uninstall --yes uv \
    && useradd --system --no-create-home breaker

USER breaker
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['BREAKER_PORT'])"
CMD ["python", "-m", "breaker_service"]
