# cnn-serve: the FastAPI service with the shipped checkpoint (the default target), and the trainer
# (`--target train`: the same plus the train extra: TensorBoard, matplotlib, tqdm).
#
#   docker build -t cnn-serve .                                   # CPU-only torch (small)
#   docker build --build-arg TORCH_INDEX_URL= -t cnn-serve:gpu .   # pip's default index (CUDA wheels on Linux)
#   docker build --target train -t cnn-serve:train .              # the trainer: python -m training.run
#
# Layers, from the one that changes least: torch, the other runtime dependencies, (train only:)
# the train extra — all read from pyproject.toml, and rebuilt only when their lines there
# change — then the project as a wheel.
#
# Docker's legacy builder (DOCKER_BUILDKIT=0) builds every stage up to the target, so there the
# serving image's build also installs the train stage's packages; the image does not hold them.

# --- requirements: pyproject.toml's dependencies as torch*, the rest, and the train extra -----
FROM python:3.11-slim AS requirements
WORKDIR /req
COPY pyproject.toml .
RUN python -c "import re, tomllib; \
project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
name = lambda d: re.match(r'[A-Za-z0-9._-]+', d).group().lower().replace('_', '-'); \
deps, train = project['dependencies'], project['optional-dependencies']['train']; \
is_torch = lambda d: name(d) in ('torch', 'torchvision'); \
open('torch.txt', 'w').write(''.join(d + '\n' for d in deps if is_torch(d))); \
open('runtime.txt', 'w').write(''.join(d + '\n' for d in deps if not is_torch(d))); \
open('train.txt', 'w').write(''.join(d + '\n' for d in train if name(d) != project['name']))"

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

# --- deps: Python, the user, and the dependencies both targets share ------------------------
FROM python:3.11-slim AS deps

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

WORKDIR /workspace

# --- train: `docker build --target train`; docker-compose.yml's train and train-gpu -----------
FROM deps AS train

LABEL org.opencontainers.image.description="Trainer for the cnn-serve CIFAR-10-style CNN"

COPY --from=requirements /req/train.txt /tmp/req/
RUN pip install -r /tmp/req/train.txt

# The project with its train extra; pip check says every dependency is installed above.
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl \
 && pip check \
 && rm -rf /tmp/dist /tmp/req

USER 10001:10001

# Flags go to the trainer: `docker run --rm cnn-serve:train --epochs 5 ...`. Without any, its
# help, rather than hours of training into a container's throw-away filesystem.
ENTRYPOINT ["python", "-m", "training.run"]
CMD ["--help"]

# --- serve: the default target (the last stage) ------------------------------------------------
FROM deps AS serve

# The project without its train and dev extras; pip check says its dependencies are all
# installed above. `python -m training.run` here says to install the train extra.
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl \
 && pip check \
 && rm -rf /tmp/dist /tmp/req

# Numeric, so that runAsNonRoot-style checks can verify it without /etc/passwd.
USER 10001:10001

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
