"""The files the package ships besides code: email, web and admin templates and static files.

They live in the repository's top-level ``templates/`` folder and travel inside the
``newsletter`` package (``newsletter/templates`` is a link to it in a checkout, and the
wheel holds a copy), so they are found with :mod:`importlib.resources` wherever the package
is installed: never by a path relative to the source tree, nor as a top-level ``templates``
package that another distribution could shadow.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped(*parts: str) -> Path:
    """The folder or file ``templates/<parts>`` inside the installed package.

    Raises RuntimeError when the package is not installed as plain files (a zipped
    install): Jinja2 and Starlette's static files read from the file system.
    """
    resource = files("newsletter").joinpath("templates", *parts)
    if not isinstance(resource, Path):
        raise RuntimeError(f"newsletter must be installed as files to read its templates (found {resource!r})")
    return resource
