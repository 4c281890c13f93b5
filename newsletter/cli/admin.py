"""`newsletter admin`: API tokens and admin UI users."""

from __future__ import annotations

import getpass
import os
import sys

import typer

from newsletter.access import accounts
from newsletter.cli.runtime import err, out, print_last_line, runtime
from newsletter.cli.tables import Col, listing
from newsletter.errors import InvalidInput
from newsletter.store.states import Role

app = typer.Typer(help="API tokens and admin UI users (roles: admin, editor).", no_args_is_help=True)
ROLE_HELP = "admin (everything) or editor (issues and sends; reads lists)."


@app.command("create-token")
def create_token(
    name: str = typer.Option(..., "--name", help="What the token is for, e.g. 'ci' or 'zapier'."),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
) -> None:
    """Create an API token; it is printed once, alone on the last line of stdout, and stored only as a hash."""
    with runtime.transaction() as session:
        row, secret = accounts.create_token(session, name, role)
    err.print(
        f"Created {row.role} token {row.name!r}. Send it as 'Authorization: Bearer <token>'; it is not shown again."
    )
    print_last_line(secret)


@app.command("tokens")
def tokens(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List API tokens (names and roles; the secrets are not kept)."""
    with runtime.transaction() as session:
        rows = accounts.all_tokens(session)
    columns = [
        Col("name", keep=True),
        Col("role"),
        Col("created_at", "created"),
        Col("last_used_at", "last used"),
        Col("revoked_at", "revoked"),
    ]
    listing(
        out,
        columns,
        (
            {
                "name": r.name,
                "role": r.role,
                "created_at": r.created_at,
                "last_used_at": r.last_used_at,
                "revoked_at": r.revoked_at,
            }
            for r in rows
        ),
        as_json=as_json,
        empty="No API tokens. Create one with: newsletter admin create-token --name NAME --role editor",
    )


@app.command("revoke-token")
def revoke_token(name: str = typer.Argument(..., help="The token's name.")) -> None:
    """Revoke an API token at once."""
    with runtime.transaction() as session:
        accounts.revoke_token(session, name)
    out.print(f"Revoked token {name!r}.")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not os.isatty(0):
        raise InvalidInput("no password: run in a terminal to be asked, or pass --password-stdin", where="password")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise InvalidInput("the two passwords differ", where="password")
    return first


@app.command("create-user")
def create_user(
    username: str = typer.Option(..., "--username", help="The login name."),
    role: str = typer.Option(Role.EDITOR.value, "--role", help=ROLE_HELP),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin's first line."),
) -> None:
    """Create an admin UI user; asks for the password twice (or reads it with --password-stdin)."""
    password = _password(password_stdin)
    with runtime.transaction() as session:
        user = accounts.create_user(session, username, password, role)
    out.print(f"Created {user.role} user {user.username!r}. Log in at {runtime.settings.base_url}/admin/")


@app.command("set-password")
def set_password(
    username: str = typer.Option(..., "--username", help="The login name."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin's first line."),
) -> None:
    """Change a user's password (logs them out everywhere)."""
    password = _password(password_stdin)
    with runtime.transaction() as session:
        accounts.set_password(session, username, password)
    out.print(f"Changed the password of {username!r}.")


@app.command("users")
def users(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List admin UI users."""
    with runtime.transaction() as session:
        rows = accounts.all_users(session)
    columns = [
        Col("username", keep=True),
        Col("role"),
        Col("created_at", "created"),
        Col("last_login_at", "last login"),
    ]
    listing(
        out,
        columns,
        (
            {"username": r.username, "role": r.role, "created_at": r.created_at, "last_login_at": r.last_login_at}
            for r in rows
        ),
        as_json=as_json,
        empty="No users. Create one with: newsletter admin create-user --username NAME --role admin",
    )


assert set(Role) == set(accounts.PERMISSIONS)
