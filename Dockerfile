# The CDS service image: the package, its fixtures (for the loader), gunicorn as the server.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY fhir_fixtures ./fhir_fixtures
RUN pip install --no-cache-dir . \
    && useradd --system --home /app cds && mkdir -p /app/var && chown cds /app/var
USER cds
ENV CDS_FIXTURES_DIR=/app/fhir_fixtures \
    CDS_DATABASE_URL=sqlite:////app/var/hypermobility-cds.sqlite3
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
CMD ["hypermobility-cds", "serve", "--host", "0.0.0.0", "--port", "8000"]
