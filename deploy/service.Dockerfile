# The RouteIQ routing service. Build from the repository root:
#   docker build -f deploy/service.Dockerfile -t routeiq-service .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
COPY pyproject.toml README.md /src/routeiq/
COPY src /src/routeiq/src
RUN pip install --no-cache-dir "/src/routeiq[service]" && rm -rf /src/routeiq

USER nobody
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=1)"]
# The token comes from the environment (ROUTEIQ_SERVICE_TOKEN) or --token-file; never baked in.
ENTRYPOINT ["routeiq", "serve"]
CMD ["--config", "/etc/routeiq/config.yaml", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
