# One image for both services: `docker run IMAGE edge --config /etc/imagecdn/edge-node.toml`
# or `docker run IMAGE origin --config /etc/imagecdn/origin-s3.toml`. Configuration only
# through the TOML profiles in /etc/imagecdn and EDGE_* / ORIGIN_* variables.
# libvips comes inside the pyvips[binary] wheel, exactly as `make` installs it for the tests.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/imagecdn
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cdn_common/ cdn_common/
COPY edge/ edge/
COPY origin/ origin/
COPY tools/ tools/
RUN /opt/imagecdn/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/imagecdn/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EDGE_HOST=0.0.0.0 \
    ORIGIN_HOST=0.0.0.0
# (only the bind address here: any other EDGE_*/ORIGIN_* would override every profile)
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin imagecdn \
    && mkdir -p /var/cache/imagecdn /var/lib/imagecdn/data \
    && chown -R imagecdn /var/cache/imagecdn /var/lib/imagecdn
COPY --from=build /opt/imagecdn /opt/imagecdn
COPY config/ /etc/imagecdn/
USER 10001
WORKDIR /var/lib/imagecdn
EXPOSE 8080 8081
VOLUME ["/var/cache/imagecdn", "/var/lib/imagecdn"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "tools.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m"]
CMD ["edge", "--config", "/etc/imagecdn/default.toml"]
