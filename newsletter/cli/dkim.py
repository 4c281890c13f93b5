"""`newsletter dkim`: make the key that signs every message, and say what to publish."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from newsletter.cli.runtime import err, out

app = typer.Typer(help="DKIM: the key that signs every message.", no_args_is_help=True)


@app.command()
def keygen(
    domain: str = typer.Option(
        ..., "--domain", help="The signing domain (d=), e.g. example.com: your From addresses' domain."
    ),
    selector: str = typer.Option(..., "--selector", help="The selector (s=), e.g. nl2026; a new one for each new key."),
    out_file: Path | None = typer.Option(
        None,
        "--out",
        help="Where to write the private key (default: $NEWSLETTER_VAR_DIR/dkim/SELECTOR._domainkey.DOMAIN.pem).",
    ),
    bits: int = typer.Option(2048, "--bits", help="RSA key size: 2048 (recommended) to 4096; 1024 at least."),
) -> None:
    """Write a new RSA private key (mode 0600, never over an existing file) and print the DNS TXT record to publish."""
    from newsletter.mail import dkim_keys  # cryptography loads only for this command

    # Reads no other setting: the DKIM settings may already name this key, which does not exist yet.
    domain = dkim_keys.check_domain(domain)
    selector = dkim_keys.check_selector(selector)
    if out_file is None:
        var_dir = Path(os.environ.get("NEWSLETTER_VAR_DIR") or "./var")
        out_file = var_dir / "dkim" / f"{dkim_keys.record_name(selector, domain)}.pem"
    key = dkim_keys.generate_private_key(bits)
    dkim_keys.write_private_key(out_file, key)
    path = out_file.resolve()
    if bits < dkim_keys.RECOMMENDED_BITS:
        err.print(f"warning: a {bits}-bit key is accepted but weak; use {dkim_keys.RECOMMENDED_BITS} bits or more")
    out.print(f"Wrote the {bits}-bit private key to {path} (mode 0600: keep it secret, back it up).")
    out.print()
    out.print(
        "1. Publish this DNS TXT record (zone-file form, the value split into strings of at most 255 characters):"
    )
    out.print()
    out.print(dkim_keys.zone_line(selector, domain, key))
    out.print()
    out.print("   or, in a DNS provider's form: name " + dkim_keys.record_name(selector, domain) + ", type TXT, value:")
    out.print()
    out.print(dkim_keys.record_value(key))
    out.print()
    out.print("2. Set these on the workers (and wherever `newsletter issues test-send` runs), then restart them:")
    out.print()
    out.print(f"NEWSLETTER_DKIM_DOMAIN={domain}")
    out.print(f"NEWSLETTER_DKIM_SELECTOR={selector}")
    out.print(f"NEWSLETTER_DKIM_PRIVATE_KEY_FILE={path}")
    out.print()
    out.print("3. Once the record is published, check everything with: newsletter doctor")
