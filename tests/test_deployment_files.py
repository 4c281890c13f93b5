"""The deployment files: Dockerfile, .dockerignore, docker-compose.yml and .env.example.

No Docker daemon is needed (none runs in CI): the compose file is checked by Debian's
`docker-compose config` (without it the test skips on a laptop and fails under CI) and against
the Compose Specification's JSON schema (tests/data/compose-spec.json, vendored from
github.com/compose-spec/compose-spec, see tests/data/compose-spec.SOURCE). The image's install
is rebuilt the way the Dockerfile does it (a wheel from the files it copies, installed
non-editable) and run; the compose health checks run against real `newsletter web`, `worker`,
`inbound` processes, a real Redis, and fail once those stop.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from newsletter.config import DOCUMENTED, Settings
from tests.conftest import ROOT, clean_environ, need_service

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

#: Services running the app image, and the ones that must keep running (each with a real check).
APP_SERVICES = {"migrate", "web", "worker", "scheduler", "inbound"}
LONG_RUNNING = {"postgres", "redis", "web", "worker", "scheduler", "inbound", "mailpit", "flower", "prometheus"}
PROMETHEUS_CONFIG = ROOT / "prometheus.yml"
#: Settings the stack sets itself rather than reading from .env.
NOT_FROM_ENV_FILE = {
    "NEWSLETTER_VAR_DIR",  # the image's volume, /var/lib/newsletter
    "NEWSLETTER_DATABASE_URL",  # built from POSTGRES_PASSWORD, POSTGRES_HOST and POSTGRES_PORT
}
SETTING_NAME = re.compile(r"\bNEWSLETTER_[A-Z0-9_]+\b")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example_names() -> list[str]:
    names = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, _ = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            names.append(name)
    return names


def filled_env_file(tmp_path: Path, **values: str) -> Path:
    """.env.example with some values filled in, as a user's .env."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values[name]}" if name in values and not line.startswith("#") else line)
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


REQUIRED = {
    "NEWSLETTER_SECRET_KEY": "test-secret-key-0123456789abcdef",
    "POSTGRES_PASSWORD": "pw0123456789",
    "NEWSLETTER_METRICS_TOKEN": "test-metrics-token-0123456789abcdef",
}


def docker_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose") or (
        "/usr/bin/docker-compose" if Path("/usr/bin/docker-compose").exists() else None
    )
    if binary is None:
        need_service("docker-compose not installed (apt-get install docker-compose)")
    # Only PATH and HOME from outside: a NEWSLETTER_* or POSTGRES_* variable in the caller's
    # environment would take precedence over the env file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- docker-compose.yml ----------------------------------------------------------------------------


def test_compose_file_validates_with_docker_compose(tmp_path: Path) -> None:
    result = docker_compose(filled_env_file(tmp_path, **REQUIRED), "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_a_required_value(tmp_path: Path, missing: str) -> None:
    given = {name: value for name, value in REQUIRED.items() if name != missing}
    result = docker_compose(filled_env_file(tmp_path, **given), "config", "-q")
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_compose_environment_is_accepted_by_the_app(tmp_path: Path) -> None:
    """What `docker-compose config` resolves for each app container starts the app's settings."""
    result = docker_compose(filled_env_file(tmp_path, **REQUIRED), "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in sorted(APP_SERVICES):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        settings = Settings.from_environ(env)  # raises ConfigError on an unknown or malformed value
        assert settings.database_url == "postgresql+psycopg://newsletter:pw0123456789@postgres:5432/newsletter"
        assert settings.broker_url == "redis://redis:6379/0"
        assert (settings.smtp.host, settings.smtp.port) == ("mailpit", 1025)
        assert settings.secret_key == REQUIRED["NEWSLETTER_SECRET_KEY"]
        assert settings.metrics_token == REQUIRED["NEWSLETTER_METRICS_TOKEN"]
        assert settings.log_format == "json"
        assert settings.dkim is None and settings.return_path is None
        assert settings.trusted_proxies == ("172.30.57.1/32",)  # the stack network's gateway: the host's proxy
        assert services[name]["image"] == "newsletter:latest"
    assert services["flower"]["environment"]["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    prometheus = services["prometheus"]["environment"]
    assert prometheus["NEWSLETTER_METRICS_TOKEN"] == REQUIRED["NEWSLETTER_METRICS_TOKEN"]
    assert prometheus["NEWSLETTER_BASE_URL"] == services["web"]["environment"]["NEWSLETTER_BASE_URL"]


def test_compose_file_matches_the_compose_specification() -> None:
    import jsonschema_rs

    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    document = compose()
    errors = [str(e).splitlines()[0] for e in validator.iter_errors(document)]
    assert errors == []
    # The schema is strict enough to catch a typo (so the pass above means something).
    broken = json.loads(json.dumps(document))
    broken["services"]["worker"]["healthcheck"]["intervall"] = "5s"
    assert not validator.is_valid(broken)


def test_every_service_has_a_health_check() -> None:
    services = compose()["services"]
    assert set(services) == LONG_RUNNING | {"migrate"}
    for name in sorted(LONG_RUNNING):
        check = services[name].get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert not check.get("disable"), name
        assert services[name]["restart"] == "unless-stopped", name
    # The one-shot migration has nothing to check while it runs; the app waits for it to succeed.
    migrate = services["migrate"]
    assert migrate["healthcheck"] == {"disable": True}
    assert migrate["restart"] == "no"
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "worker", "scheduler", "inbound"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name


def test_the_services_run_the_right_commands() -> None:
    stack = compose()
    services = stack["services"]
    assert services["web"]["command"] == ["web", "--host", "0.0.0.0", "--port", "8000"]
    assert services["worker"]["command"][0] == "worker"
    assert services["scheduler"]["command"] == ["scheduler"]
    assert services["inbound"]["command"] == ["inbound", "--host", "0.0.0.0", "--port", "2525"]
    # The queue and the send journal survive a Redis restart (README, "Running workers on several machines").
    assert services["redis"]["command"][:5] == ["redis-server", "--appendonly", "yes", "--appendfsync", "everysec"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "redis-data" in stack["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in APP_SERVICES:
        assert "newsletter-var:/var/lib/newsletter" in services[name]["volumes"], name
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    assert services["flower"]["image"].startswith("mher/flower:")
    env = services["web"]["environment"]
    assert env["NEWSLETTER_SMTP_URL"] == "${NEWSLETTER_SMTP_URL:-smtp://mailpit:1025}"


def test_only_the_stacks_proxy_is_believed() -> None:
    """X-Forwarded-For is believed only from the gateway of the stack's own network, where a TLS proxy
    on the host reaches the web port published on 127.0.0.1 (never from everyone, as uvicorn's
    FORWARDED_ALLOW_IPS=* did; the app alone judges, see NEWSLETTER_TRUSTED_PROXIES)."""
    document = compose()
    (network,) = document["networks"]["default"]["ipam"]["config"]
    subnet, gateway = ipaddress.ip_network(network["subnet"]), ipaddress.ip_address(network["gateway"])
    assert subnet.is_private and gateway in subnet
    trusted = document["x-newsletter-environment"]["NEWSLETTER_TRUSTED_PROXIES"]
    assert trusted == "${NEWSLETTER_TRUSTED_PROXIES:-" + str(gateway) + "}"
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    assert example["NEWSLETTER_TRUSTED_PROXIES"] == str(gateway)
    settings = Settings.from_environ({"NEWSLETTER_TRUSTED_PROXIES": str(gateway), "NEWSLETTER_SECRET_KEY": "x" * 48})
    assert settings.trusted_proxies == (f"{gateway}/32",)
    # Only this host reaches the web port, so only its processes connect from the gateway.
    web = document["services"]["web"]
    assert web["ports"] == ["${WEB_PUBLISH:-127.0.0.1:8000}:8000"] and example["WEB_PUBLISH"].startswith("127.0.0.1:")
    assert "networks" not in web  # on the default network, whose gateway that is
    for path in (COMPOSE_FILE, ENV_EXAMPLE):
        assert "FORWARDED_ALLOW_IPS" not in path.read_text(), (
            path.name
        )  # uvicorn's own trust is off (proxy_headers=False)


def test_workers_scale() -> None:
    """`--scale worker=N` needs generated container names and no fixed host port."""
    services = compose()["services"]
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    assert not [name for name, service in services.items() if "container_name" in service]


def test_every_setting_named_is_a_real_setting() -> None:
    for path in (COMPOSE_FILE, ENV_EXAMPLE):
        named = set(SETTING_NAME.findall(path.read_text()))
        assert named, path
        unknown = sorted(named - set(DOCUMENTED))
        assert unknown == [], f"{path.name} names unknown settings (the app refuses them at start-up): {unknown}"


def test_every_setting_can_be_set_from_the_env_file() -> None:
    """Each NEWSLETTER_* line of .env.example reaches the containers, and every setting has one."""
    environment = compose()["x-newsletter-environment"]
    names = env_example_names()
    assert len(names) == len(set(names)), "a name appears twice in .env.example"
    for name in names:
        if name.startswith("NEWSLETTER_"):
            assert "${" + name + ":" in str(environment.get(name)), (
                f"{name} in .env.example does not reach the containers"
            )
    missing = sorted(set(DOCUMENTED) - NOT_FROM_ENV_FILE - set(names))
    assert missing == [], (
        f"settings with no line in .env.example and docker-compose.yml's x-newsletter-environment: {missing}"
    )
    for name in sorted(NOT_FROM_ENV_FILE):
        assert name not in names, f"{name} in .env.example would be ignored: the stack sets it"
    # Every ${VARIABLE} the compose file reads is documented in .env.example.
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert sorted(read - set(names)) == []


# --- Dockerfile and .dockerignore --------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1] if " " in item else "") for item in joined]


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def test_dockerfile_builds_a_slim_non_root_image_from_pyproject() -> None:
    instructions = dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in instructions if op == "ARG" and "=" in a}
    bases = [
        a.split()[0].replace("${PYTHON_VERSION}", args.get("PYTHON_VERSION", ""))
        for op, a in instructions
        if op == "FROM"
    ]
    assert len(bases) == 2
    for base in bases:
        assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    runs = " ".join(a for op, a in instructions if op == "RUN")
    assert re.search(r"pip install (--no-deps --force-reinstall )?\.(\s|$)", runs)
    # No test extras; only the s3 extra (boto3, for a media library in an S3 bucket).
    assert "[test]" not in DOCKERFILE.read_text() and set(re.findall(r"\.\[([^\]]*)\]", runs)) <= {"s3"}
    final = final_stage(instructions)
    users = [a for op, a in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    env = " ".join(a for op, a in final if op == "ENV")
    assert "NEWSLETTER_VAR_DIR=/var/lib/newsletter" in env
    assert [a for op, a in final if op == "VOLUME"] == ['["/var/lib/newsletter"]']
    assert [a for op, a in final if op == "ENTRYPOINT"] == ['["newsletter"]']
    assert [op for op, _ in final if op == "HEALTHCHECK"] == ["HEALTHCHECK"]
    assert ("COPY", "--from=build /opt/newsletter /opt/newsletter") in final
    # Nothing secret is baked in: no password, key or secret in ENV or ARG.
    for op, value in instructions:
        if op in ("ENV", "ARG"):
            assert not re.search(r"SECRET|PASSWORD|KEY|TOKEN", value, re.I), f"{op} {value}"


def build_context_sources() -> list[str]:
    """The paths the build stage copies from the context (not from another stage)."""
    sources = []
    for op, value in dockerfile_instructions():
        if op == "COPY" and not value.startswith("--from"):
            sources.extend(shlex.split(value)[:-1])
    return sources


def dockerignore_excludes(name: str) -> bool:
    """Whether .dockerignore keeps a top-level entry out of the context (last matching pattern wins)."""
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if "/" not in pattern and fnmatch.fnmatch(name, pattern):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    for name in (".env", ".env.example", "var", ".venv", ".git", "tests", "bench", "examples", ".ci"):
        assert dockerignore_excludes(name), name
    sources = build_context_sources()
    assert set(sources) == {"pyproject.toml", "README.md", "newsletter", "subscribers", "templates"}
    for source in sources:
        assert not dockerignore_excludes(source), source
        assert (ROOT / source).exists(), source


@pytest.mark.slow
def test_the_image_install_finds_its_templates(tmp_path: Path) -> None:
    """What the Dockerfile installs works outside the source tree: a wheel of the files it copies,
    installed non-editable, renders an issue (templates/email) and serves the subscriber and admin
    pages with their static files (templates/web, templates/admin)."""
    context = tmp_path / "context"
    for source in build_context_sources():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(src, context / source)
    wheels, target, run = tmp_path / "wheels", tmp_path / "site", tmp_path / "run"
    run.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(wheels), str(context)], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("newsletter-*.whl")
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    source_templates = {
        p.relative_to(context / "templates").as_posix() for p in (context / "templates").rglob("*") if p.is_file()
    }
    shipped = target / "newsletter" / "templates"
    installed_templates = {p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file()}
    assert source_templates and source_templates <= installed_templates
    assert not (target / "templates").exists()  # inside the package, never a top-level "templates"

    env = clean_environ(
        PYTHONPATH=str(target),
        NEWSLETTER_VAR_DIR=str(run / "var"),
        NEWSLETTER_BROKER_URL="redis://127.0.0.1:1/0",
        NEWSLETTER_BASE_URL="https://news.example.org",
    )

    def newsletter(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "newsletter", *args], env=env, cwd=run, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"newsletter {' '.join(args)}: {result.stderr}"
        return result.stdout

    newsletter("db", "upgrade")
    newsletter("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    issue = newsletter(
        "issues", "create", "weekly", str(ROOT / "examples" / "issues" / "this-week-in-info-war.md")
    ).split()[-1]
    newsletter("issues", "preview", issue, "--html", str(run / "issue.html"), "--text", str(run / "issue.txt"))
    assert "Qualified Support in Moscow" in (run / "issue.html").read_text()
    assert "https://news.example.org/unsubscribe/" in (run / "issue.txt").read_text()

    probe = """
import sys
from pathlib import Path
import newsletter, subscribers
from newsletter.content import rendering
from newsletter.http.admin.pages import TEMPLATE_DIR as ADMIN
from newsletter.http.context import TEMPLATE_DIR as WEB, STATIC_DIR
site = Path(sys.argv[1])
for path in (Path(newsletter.__file__), Path(subscribers.__file__), rendering.default_template_dir(), WEB, STATIC_DIR, ADMIN):
    assert path.resolve().is_relative_to(site), path
    assert path.exists(), path
import os
from fastapi.testclient import TestClient
from newsletter.config import Settings
from newsletter.http.app import create_app
client = TestClient(create_app(Settings.from_environ(os.environ)))
for url, text in (("/", "The Weekly"), ("/static/site.css", "{"), ("/admin/login", "<form")):
    response = client.get(url)
    assert response.status_code == 200 and text in response.text, (url, response.status_code, response.text[:300])
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", probe, str(target)], env=env, cwd=run, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


# --- the compose health checks, run against real processes --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_check_code(service: str, **replace: str) -> str:
    """The Python one-liner of a service's compose health check, pointed at a test port."""
    test = compose()["services"][service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and len(test) == 4, test
    code = test[3]
    for old, new in replace.items():
        assert old in code, (service, old)
        code = code.replace(old, new)
    return code


def run_check(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


class Process:
    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, name: str) -> None:
        self.log = cwd / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", *args],
            env=env,
            cwd=cwd,
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{what} exited {self.proc.returncode}:\n{self.log.read_text()}")
            if ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what} not ready after {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def answers_http(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def accepts_tcp(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def stack_env(tmp_path: Path, redis_url: str) -> Iterator[dict[str, str]]:
    env = clean_environ(
        NEWSLETTER_VAR_DIR=str(tmp_path / "var"),
        NEWSLETTER_BROKER_URL=redis_url,
        NEWSLETTER_SECRET_KEY="test-secret-key-0123456789abcdef",
        NEWSLETTER_SMTP_URL="smtp://127.0.0.1:1",  # no mail is sent; workers only warn at start-up
        NEWSLETTER_BASE_URL="https://news.example.org/news",  # the check must find the app under /news
    )
    subprocess.run(
        [sys.executable, "-m", "newsletter", "db", "upgrade"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield env


@pytest.mark.redis
@pytest.mark.slow
def test_app_health_checks_pass_while_the_services_run_and_fail_once_they_stop(
    tmp_path: Path, stack_env: dict[str, str]
) -> None:
    web_port, inbound_port = free_port(), free_port()
    web_code = health_check_code("web", **{"127.0.0.1:8000": f"127.0.0.1:{web_port}"})
    inbound_code = health_check_code("inbound", **{"2525": str(inbound_port)})
    worker_code = health_check_code("worker")
    scheduler_code = health_check_code("scheduler")

    web = Process(["web", "--host", "127.0.0.1", "--port", str(web_port)], stack_env, tmp_path, "web")
    inbound = Process(["inbound", "--host", "127.0.0.1", "--port", str(inbound_port)], stack_env, tmp_path, "inbound")
    worker = Process(["worker", "--concurrency", "1"], stack_env, tmp_path, "worker")
    try:
        web.wait_until(lambda: answers_http(f"http://127.0.0.1:{web_port}/news/"), "newsletter web")
        inbound.wait_until(lambda: accepts_tcp(inbound_port), "newsletter inbound")
        worker.wait_until(lambda: "ready." in worker.log.read_text(errors="replace"), "newsletter worker")
        for name, code in (
            ("web", web_code),
            ("inbound", inbound_code),
            ("worker", worker_code),
            ("scheduler", scheduler_code),
        ):
            result = run_check(code, stack_env, tmp_path)
            assert result.returncode == 0, f"{name} health check failed: {result.stderr[-2000:]}"
    finally:
        for process in (web, inbound, worker):
            process.stop()

    # Stopped: each check fails (the worker's finds no worker of this host answering).
    for code in (web_code, inbound_code, worker_code):
        assert run_check(code, stack_env, tmp_path).returncode != 0
    # The scheduler's check fails when its broker is unreachable.
    unreachable = {**stack_env, "NEWSLETTER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert run_check(scheduler_code, unreachable, tmp_path).returncode != 0


def test_web_health_check_of_the_image_is_the_compose_one() -> None:
    """The Dockerfile's HEALTHCHECK (for its default command, the web app) is the checked one above."""
    (healthcheck,) = [a for op, a in final_stage(dockerfile_instructions()) if op == "HEALTHCHECK"]
    exec_form = json.loads(healthcheck.split("CMD", 1)[1].strip())
    assert exec_form[:2] == ["python", "-c"]
    assert exec_form[2].replace("timeout=8", "") == health_check_code("web").replace("timeout=8", "")
    assert [a for op, a in final_stage(dockerfile_instructions()) if op == "CMD"] == [
        '["web", "--host", "0.0.0.0", "--port", "8000"]'
    ]


# --- Prometheus: the stack's scraper and the web app's /metrics token --------------------------------


def prometheus_start_script(tmp_path: Path) -> tuple[str, Path]:
    """The prometheus service's start script as its shell runs it (compose's $$ is one $), with
    /tmp, its config mount and the prometheus binary pointed into ``tmp_path``; and the fake binary."""
    service = compose()["services"]["prometheus"]
    assert service["entrypoint"] == ["/bin/sh", "-c"] and len(service["command"]) == 1
    assert "./prometheus.yml:/etc/prometheus/newsletter.yml:ro" in service["volumes"]
    assert service["tmpfs"] == ["/tmp"]  # the token file is on a tmpfs, never on a volume
    fake = tmp_path / "prometheus"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/prometheus.args"\n')
    fake.chmod(0o755)
    script = service["command"][0].replace("$$", "$")
    for old, new in (
        ("/tmp/", f"{tmp_path}/tmp/"),
        ("/etc/prometheus/newsletter.yml", str(PROMETHEUS_CONFIG)),
        ("/bin/prometheus", str(fake)),
    ):
        assert old in script, old
        script = script.replace(old, new)
    (tmp_path / "tmp").mkdir()
    return script, fake


@pytest.mark.parametrize(
    ("base_url", "path"), [("http://localhost:8000", "/metrics"), ("https://news.example.org/news/", "/news/metrics")]
)
def test_the_prometheus_service_writes_its_token_file_and_scrape_path_at_start(
    tmp_path: Path, base_url: str, path: str
) -> None:
    script, _ = prometheus_start_script(tmp_path)
    token = REQUIRED["NEWSLETTER_METRICS_TOKEN"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NEWSLETTER_METRICS_TOKEN": token,
        "NEWSLETTER_BASE_URL": base_url,
    }
    result = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "prometheus.args").read_text().split() == [
        f"--config.file={tmp_path}/tmp/prometheus.yml",
        "--storage.tsdb.path=/prometheus",
    ]
    (job,) = yaml.safe_load((tmp_path / "tmp" / "prometheus.yml").read_text())["scrape_configs"]
    assert job["metrics_path"] == path and job["scheme"] == "http"
    assert job["static_configs"] == [{"targets": ["web:8000"]}]  # the web service and the port it listens on
    assert compose()["services"]["web"]["command"][-1] == "8000"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/tmp/metrics-token"}
    token_file = tmp_path / "tmp" / "metrics-token"
    assert token_file.read_text() == token and token_file.stat().st_mode & 0o077 == 0  # no newline; owner only
    assert token not in PROMETHEUS_CONFIG.read_text()


@pytest.mark.redis
@pytest.mark.slow
def test_prometheus_scrape_config_opens_metrics_of_a_real_web_process(
    tmp_path: Path, stack_env: dict[str, str]
) -> None:
    """What the stack's Prometheus sends (its scrape path and the token from its credentials file) gets
    the figures from `newsletter web`; without the token, 401; with the token unset, no /metrics at all."""
    script, _ = prometheus_start_script(tmp_path)
    token = REQUIRED["NEWSLETTER_METRICS_TOKEN"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NEWSLETTER_METRICS_TOKEN": token,
        "NEWSLETTER_BASE_URL": stack_env["NEWSLETTER_BASE_URL"],
    }
    assert subprocess.run(["/bin/sh", "-c", script], env=env, timeout=30).returncode == 0
    (job,) = yaml.safe_load((tmp_path / "tmp" / "prometheus.yml").read_text())["scrape_configs"]
    credentials = (tmp_path / job["authorization"]["credentials_file"].lstrip("/")).read_text()

    for token_setting, expect in ((token, 200), (None, 404)):
        port = free_port()
        web_env = {**stack_env, **({"NEWSLETTER_METRICS_TOKEN": token_setting} if token_setting else {})}
        web = Process(["web", "--host", "127.0.0.1", "--port", str(port)], web_env, tmp_path, f"web-{expect}")
        try:
            web.wait_until(functools.partial(answers_http, f"http://127.0.0.1:{port}/news/"), "newsletter web")
            url = f"http://127.0.0.1:{port}{job['metrics_path']}"
            scraped = httpx.get(url, headers={"Authorization": f"Bearer {credentials}"}, timeout=10)
            assert scraped.status_code == expect, scraped.text[:300]
            if expect == 200:
                assert "newsletter_broker_up 1.0" in scraped.text
                refused = httpx.get(url, timeout=10)
                assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
                assert "newsletter_" not in refused.text
                assert httpx.get(url, headers={"Authorization": "Bearer " + "x" * 40}, timeout=10).status_code == 401
            else:
                assert httpx.get(url, timeout=10).status_code == 404
        finally:
            web.stop()
