# drbot: `drbot serve` in a slim image, as a non-root user, state on the /data volume.
#
#   docker build -t drbot .
#   docker run -d --name drbot -p 3000:3000 -v drbot-data:/data \
#     -v "$PWD/drbot.yml:/etc/drbot/drbot.yml:ro" -e DRBOT_CONFIG=/etc/drbot/drbot.yml \
#     -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN drbot          # or SLACK_SIGNING_SECRET for HTTP mode
#
# Two stages so the image carries the installed virtualenv only: no pip cache, no build context.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/drbot
ENV PATH=/opt/drbot/bin:$PATH
WORKDIR /src
# The package metadata first, so editing code does not re-resolve the dependencies' layer needlessly.
COPY pyproject.toml README.md ./
COPY runbooks ./runbooks
COPY integrations ./integrations
COPY bot ./bot
# Every provider extra, never `dev`: the image runs drbot, it does not test it.
RUN pip install ".[slack,aws,gcp,azure,k8s,qdrant,pagerduty,postgres]"

FROM python:3.11-slim
LABEL org.opencontainers.image.title="drbot" \
      org.opencontainers.image.description="Slack ChatOps bot that runs disaster-recovery runbooks" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/drbot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DRBOT_DATABASE_URL=sqlite:////data/drbot.db
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 drbot \
 && useradd --system --uid 10001 --gid drbot --home-dir /data --shell /usr/sbin/nologin drbot \
 && mkdir -p /data \
 && chown drbot:drbot /data
COPY --from=build /opt/drbot /opt/drbot
WORKDIR /data
# SQLite keeps drbot.db and DBOS's drbot.dbos.db side by side here; point DRBOT_DATABASE_URL at PostgreSQL for HA.
VOLUME ["/data"]
USER 10001:10001
EXPOSE 3000
# /healthz answers in both modes: Socket Mode still serves /healthz and /metrics on --port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=3).status == 200 else 1)"
CMD ["drbot", "serve", "--host", "0.0.0.0", "--port", "3000"]
