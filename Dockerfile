# One image for every nebula-live service; compose picks the subcommand.
FROM node:20-bookworm-slim AS player
WORKDIR /player
COPY player_demo/package.json player_demo/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg libsrt1.5-openssl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY media ./media
COPY core ./core
COPY ingest ./ingest
COPY packager ./packager
COPY api ./api
COPY nebula_live ./nebula_live
COPY player_demo ./player_demo
COPY --from=player /player/node_modules/hls.js/dist/hls.min.js ./player_demo/static/vendor/
# Editable, so the API finds player_demo/ beside the code.
RUN pip install --no-cache-dir -e .

RUN useradd --system --create-home nebula
USER nebula
ENV NEBULA_BIND_HOST=0.0.0.0
EXPOSE 8000 1935 9000/udp
ENTRYPOINT ["nebula-live"]
CMD ["api"]
