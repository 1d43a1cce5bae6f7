# The production-stack router image with lodestar-vllm installed: `--routing-logic learned` on the STOCK router
# (no upstream patches needed). Build:   docker build -t <registry>/lmstack-router-lodestar:0.1.0 .
# Deploy with the stock Helm chart:     helm install vllm vllm/vllm-stack -f helm-values/learned.yaml
#
# Pinned base: the router release the adapter was tested against (production-stack a6c01db0, chart 0.1.12).
# Change the tag only together with a run of tests/prodstack against that router (docs/production-stack.md).
ARG ROUTER_IMAGE=lmcache/lmstack-router:v0.1.12
FROM ${ROUTER_IMAGE}

# Only what the package needs to install; tests, docs and patches stay out of the image.
COPY pyproject.toml README.md /opt/lodestar-vllm/
COPY lodestar_vllm /opt/lodestar-vllm/lodestar_vllm

# Install into the router's own venv WITHOUT moving its pins: our requirements are ranges its pins satisfy
# (numpy 1.26.4, fastapi 0.128.0, prometheus-client 0.21.1, uvicorn 0.34.0; httpx comes with openai/vllm).
# `pip check` fails the build if anything would conflict. torch (training) is already in the image when it was
# built with the default lmcache extra (vllm pulls it in); the import check below fails the build if not.
# The k8s extra (kubernetes-asyncio) is the Kubernetes awareness that helm-values/learned*.yaml turn on; into
# the router's venv it adds that one package and moves nothing (pip install --dry-run against a6c01db0's venv).
RUN /opt/venv/bin/python -m pip install --no-cache-dir "/opt/lodestar-vllm[k8s]" \
    && /opt/venv/bin/python -m pip check \
    && /opt/venv/bin/python -c "import torch, kubernetes_asyncio, vllm_router.routers.routing_logic, lodestar_vllm.integrations.production_stack.compat as c; c.check_host()"

# Learned state (LODESTAR_CHECKPOINT_PATH) lives on a mounted per-pod volume; see helm-values/learned.yaml.
ENV LODESTAR_CHECKPOINT_PATH=/var/lib/lodestar/checkpoint.bin
# Same arguments as the stock entrypoint, plus `--routing-logic learned` and --lodestar-* options.
ENTRYPOINT ["/opt/venv/bin/lodestar-vllm-router"]
CMD []
