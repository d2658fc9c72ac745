# TwinSpace broker image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY twinspace ./twinspace
COPY broker ./broker
COPY connectors ./connectors
COPY policies ./policies
COPY contracts ./contracts
# Editable install: the broker reads policies/ and contracts/ relative to /app.
RUN pip install --no-cache-dir -e '.[broker,connector,chain]'
ENV TWINSPACE_DATA_DIR=/data
EXPOSE 8000
CMD ["twinspace", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
