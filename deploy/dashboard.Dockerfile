# syntax=docker/dockerfile:1
# LaDa dashboard image. Build from the repository root (the compose files do):
#   docker build -f deploy/dashboard.Dockerfile -t lada/dashboard .
# ---- shared base: keep this block identical in server/client/dashboard.Dockerfile (tests/system/test_deploy.py
# ---- checks it), so the three images share its layers and torch is downloaded once.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=/data/hf \
    LADA_SERVER__DATA_DIR=/data LADA_MODELS__CACHE_DIR=/data/models
# CPU build of PyTorch (a bare "torch" would pull the multi-GB CUDA build); for a GPU host use a CUDA base
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /opt/lada/src
COPY pyproject.toml README.md ./
COPY lada lada
COPY common common
COPY server server
COPY client client
RUN pip install ".[postgres]" && rm -rf build *.egg-info
COPY deploy/entrypoint.sh deploy/healthcheck.py /opt/lada/
RUN chmod 755 /opt/lada/entrypoint.sh \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin lada \
    && mkdir -p /data/models && chown -R lada:lada /data
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["/opt/lada/entrypoint.sh"]
# ---- end of shared base
# The web dashboard (FastAPI) over the run database; read-only, never migrates; needs no model.
ENV LADA_BUILD_MODELS=none
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/opt/lada/healthcheck.py", "http", "http://127.0.0.1:8765/healthz"]
USER lada
CMD ["lada", "dashboard", "--dashboard.host", "0.0.0.0", "--dashboard.port", "8765"]
