# cnn-serve: the FastAPI service with the shipped checkpoint; docker-compose.yml also runs the
# trainer from this image.
#
#   docker build -t cnn-serve .                                   # CPU-only torch (small)
#   docker build --build-arg TORCH_INDEX_URL= -t cnn-serve:gpu .   # pip's default index (CUDA wheels on Linux)
#
# Layers, from the one that changes least: torch, the other runtime dependencies (both read from
# pyproject.toml, and rebuilt only when their lines there change), then the project as a wheel.

# --- requirements: split pyproject.toml's dependencies into torch* and the rest --------------
FROM python:3.11-slim AS requirements
WORKDIR /req
COPY pyproject.toml .
RUN python -c "import re, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
is_torch = lambda d: re.match(r'[A-Za-z0-9._-]+', d).group().lower() in ('torch', 'torchvision'); \
open('torch.txt', 'w').write(''.join(d + '\n' for d in deps if is_torch(d))); \
open('runtime.txt', 'w').write(''.join(d + '\n' for d in deps if not is_torch(d)))"

# --- wheel: the project itself (app, models with the checkpoint, training) ---------------------
FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md is left out on purpose (docs, not runtime); setuptools only warns that it is missing.
COPY pyproject.toml ./
COPY app/ app/
COPY models/ models/
COPY training/ training/
RUN pip wheel --no-deps --wheel-dir /dist .

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="cnn-serve" \
      org.opencontainers.image.description="CIFAR-10-style CNN image classifier over HTTP"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A venv keeps our packages apart from the base image's Python (and from Debian's, where the
# base image is built from Debian's python3). Non-root user; /workspace is its home and the
# working directory, and holds no Python packages, so nothing there shadows the installed ones.
RUN python -m venv /opt/venv \
 && groupadd --gid 10001 app \
 && useradd --no-log-init --uid 10001 --gid app --create-home --home-dir /workspace app

# torch + torchvision. Default: PyTorch's CPU-only wheels (a few hundred MB instead of several
# GB of CUDA libraries). Empty: pip's default index; or any other index, e.g. a CUDA one.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=requirements /req/torch.txt /tmp/req/
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r /tmp/req/torch.txt

COPY --from=requirements /req/runtime.txt /tmp/req/
RUN pip install -r /tmp/req/runtime.txt

# The project without its dev extra; its dependencies are all installed above (pip check says so).
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl \
 && pip check \
 && rm -rf /tmp/dist /tmp/req

# Numeric, so that runAsNonRoot-style checks can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /workspace

# `python -m app` is uvicorn (app.main:app) configured by the service's own settings: the bind
# address and port below; worker processes from CNN_SERVE_WORKERS (unset: the service's default);
# everything else as documented (CNN_SERVE_*, MODEL_PATH). Exec form, so uvicorn is PID 1 and
# stops cleanly on SIGTERM.
ENV CNN_SERVE_HOST=0.0.0.0 \
    CNN_SERVE_PORT=8000
EXPOSE 8000

# /healthz is 200 once the model is loaded and warmed up; no curl in the image, so urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('CNN_SERVE_PORT') or '8000'), timeout=4)"]

CMD ["python", "-m", "app"]
