#!/usr/bin/env bash
# The `make demo` walk-through: every step is a plain `newsletter` command you can run yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

export NEWSLETTER_VAR_DIR="${NEWSLETTER_VAR_DIR:-$PWD/var/demo}"
export NEWSLETTER_POSTAL_ADDRESS="${NEWSLETTER_POSTAL_ADDRESS:-The Weekly, 1 Example Street, 12345 Example City}"
unset NEWSLETTER_DATABASE_URL
rm -rf "$NEWSLETTER_VAR_DIR"
nl() { printf '\n\033[1m$ newsletter %s\033[0m\n' "$*"; .venv/bin/newsletter "$@"; }

nl db upgrade
nl lists create weekly --name "This Week in Info War" --from-email news@example.org --from-name "Info War Weekly"
nl subscribers import weekly examples/subscribers.csv --confirmed
nl lists show weekly
nl issues create weekly examples/issues/this-week-in-info-war.md
nl issues preview 1

printf '\nDemo state lives in %s (SQLite database: %s/newsletter.db).\n' "$NEWSLETTER_VAR_DIR" "$NEWSLETTER_VAR_DIR"
printf 'Try: NEWSLETTER_VAR_DIR=%s .venv/bin/newsletter subscribers ls weekly --status confirmed\n' "$NEWSLETTER_VAR_DIR"
