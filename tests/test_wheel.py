"""The wheel installs cleanly: it holds only the ``newsletter`` and ``subscribers`` packages, and the
templates travel inside ``newsletter`` (found with importlib.resources).

The defect this guards against: the wheel used to install a top-level package named ``templates``,
so another distribution's ``templates/email/layout.html`` in the same environment silently
replaced ours. Here the wheel is built from a copy of the source tree (tests, bench and examples
included, so the package list is what keeps them out), installed with its dependencies into a fresh
venv, then a small distribution shipping its own top-level ``templates/email/layout.html`` is
installed after it, and the sample issue is rendered by the installed ``newsletter`` command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

SAMPLE_ISSUE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"
#: Text only our layout (templates/email/layout.html) writes into an issue: its footer.
OUR_MARKER = "You are receiving this because you subscribed to"
#: Text only the other distribution's layout writes.
OTHER_MARKER = "SHADOW-LAYOUT-3f9c1e"
#: What a checkout holds that is not source: never copied into the build.
NOT_SOURCE = (".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache")

PIP_TIMEOUT = 900


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def build_wheel(source: Path, wheels: Path) -> Path:
    """``pip wheel --no-deps`` of a source folder, as the Dockerfile's ``pip install .`` builds it."""
    before = set(wheels.glob("*.whl"))
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            "wheel",
            "--no-deps",
            "-w",
            str(wheels),
            ".",
        ],
        cwd=source,
    )
    (wheel,) = set(wheels.glob("*.whl")) - before
    return wheel


def other_distribution(folder: Path) -> Path:
    """A distribution ("shadow-templates") shipping a top-level ``templates`` package with email/layout.html."""
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "shadow-templates"
version = "1.0"

[tool.setuptools]
packages = ["templates"]

[tool.setuptools.package-data]
templates = ["email/*.html"]
""",
        encoding="utf-8",
    )
    email = folder / "templates" / "email"
    email.mkdir(parents=True)
    (folder / "templates" / "__init__.py").write_text("", encoding="utf-8")
    (email / "layout.html").write_text(
        f"<!DOCTYPE html><html><body><p>{OTHER_MARKER}</p>{{% block content %}}{{% endblock %}}</body></html>\n",
        encoding="utf-8",
    )
    return folder


def fresh_environ(**extra: str) -> dict[str, str]:
    """This process's environment without the checkout on the path and without our settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NEWSLETTER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(extra)
    return env


def test_our_layout_is_marked_and_the_marker_is_ours_alone() -> None:
    """The marker the wheel test looks for comes from our layout and from nothing else it renders."""
    assert OUR_MARKER in (ROOT / "templates" / "email" / "layout.html").read_text(encoding="utf-8")
    for name in ("issue.html", "issue.txt"):
        assert OUR_MARKER not in (ROOT / "templates" / "email" / name).read_text(encoding="utf-8")
    assert OUR_MARKER not in SAMPLE_ISSUE.read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_wheel_installs_beside_another_templates_distribution_and_renders_with_our_layout(
    tmp_path: Path,
) -> None:
    # --- the wheel, from a copy of the source tree (newsletter/templates stays a link, as in a checkout)
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    assert (source / "newsletter" / "templates").is_symlink()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = build_wheel(source, wheels)

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
    assert {name.split("/")[0] for name in names} == {"newsletter", "subscribers", dist_info}
    assert sorted(top_level) == ["newsletter", "subscribers"]
    shipped = {n.removeprefix("newsletter/templates/") for n in names if n.startswith("newsletter/templates/")}
    in_source = {p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*") if p.is_file()}
    assert in_source and in_source <= shipped, sorted(in_source - shipped)
    assert "newsletter/store/migrations/env.py" in names
    # The compiled catalogues the app reads at run time (newsletter/locales), with their sources.
    for language in ("de", "fr", "es"):
        for suffix in ("mo", "po"):
            assert f"newsletter/locales/{language}/LC_MESSAGES/messages.{suffix}" in names

    other_wheel = build_wheel(other_distribution(tmp_path / "other"), wheels)

    # --- a fresh venv: ours with its dependencies from the index, then the other one over it
    venv = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=fresh_environ())
    python, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip", "-q"]
    run([*pip, "install", str(wheel)], cwd=tmp_path, env=fresh_environ())
    run([*pip, "install", "--no-deps", str(other_wheel)], cwd=tmp_path, env=fresh_environ())

    site = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            env=fresh_environ(),
        ).stdout.strip()
    )
    # The other distribution's layout is really there, at the path ours used to have.
    assert OTHER_MARKER in (site / "templates" / "email" / "layout.html").read_text(encoding="utf-8")
    ours = run(
        [str(python), "-c", "from newsletter.content import rendering; print(rendering.default_template_dir())"],
        cwd=tmp_path,
        env=fresh_environ(),
    ).stdout.strip()
    assert Path(ours) == site / "newsletter" / "templates" / "email"

    # --- the sample issue, rendered by the installed command, outside the checkout
    work = tmp_path / "work"
    work.mkdir()
    env = fresh_environ(
        NEWSLETTER_VAR_DIR=str(work / "var"),
        NEWSLETTER_BROKER_URL="redis://127.0.0.1:1/0",
        NEWSLETTER_BASE_URL="https://news.example.org",
    )

    def newsletter(*args: str) -> str:
        return run([str(venv / "bin" / "newsletter"), *args], cwd=work, env=env).stdout

    newsletter("db", "upgrade")
    newsletter("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    issue = newsletter("issues", "create", "weekly", str(SAMPLE_ISSUE)).split()[-1]
    html, text = work / "issue.html", work / "issue.txt"
    newsletter("issues", "preview", issue, "--html", str(html), "--text", str(text))
    rendered = html.read_text(encoding="utf-8")
    assert "Qualified Support in Moscow" in rendered
    assert OUR_MARKER in rendered
    assert OTHER_MARKER not in rendered
    assert "https://news.example.org/unsubscribe/" in text.read_text(encoding="utf-8")

    # A German list's issue: its footer in German, from the catalogue installed with the wheel.
    newsletter(
        "lists", "create", "woche", "--name", "Die Woche", "--from-email", "news@example.org", "--language", "de"
    )
    german = newsletter("issues", "create", "woche", str(SAMPLE_ISSUE)).split()[-1]
    newsletter("issues", "preview", german, "--html", str(html), "--text", str(text))
    rendered = html.read_text(encoding="utf-8")
    assert '<html lang="de"' in rendered and "Im Browser ansehen" in rendered
    assert "Sie erhalten diese E-Mail aufgrund Ihres Abonnements von Die Woche" in rendered
