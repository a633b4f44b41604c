# One image for every nebula-live service; compose picks the subcommand.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY ingest ./ingest
COPY packager ./packager
COPY api ./api
RUN pip install --no-cache-dir .

RUN useradd --system --create-home nebula
USER nebula
ENV NEBULA_BIND_HOST=0.0.0.0
EXPOSE 8000 1935 9000/udp
ENTRYPOINT ["nebula-live"]
CMD ["api"]
