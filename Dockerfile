# The breaker service. Stateless: all breaker state lives in Redis (REDIS_URL).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BREAKER_HOST=0.0.0.0 \
    BREAKER_PORT=8080

WORKDIR /app
COPY client/ client/
COPY pyproject.toml README.md ./
COPY breaker_service/ breaker_service/
RUN pip install --no-cache-dir ./client . \
    && useradd --system --no-create-home breaker

USER breaker
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['BREAKER_PORT'])"
CMD ["python", "-m", "breaker_service"]
