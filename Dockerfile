# Signoff worker / CLI image. Workers are stateless: scale them horizontally against one cluster.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SIGNOFF_HOME=/var/lib/signoff
WORKDIR /app
COPY pyproject.toml README.md ./
COPY signoff ./signoff
COPY workflows ./workflows
COPY activities ./activities
COPY connectors ./connectors
COPY policies ./policies
COPY playbooks ./playbooks
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/signoff signoff \
    && mkdir -p /var/lib/signoff && chown signoff /var/lib/signoff
USER signoff
ENTRYPOINT ["signoff"]
CMD ["worker"]
