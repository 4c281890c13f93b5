#!/usr/bin/env bash
# The `make demo` walk-through: every step is a plain `newsletter` command you can run yourself.
# It sends the sample issue to the 300 sample subscribers through the embedded Redis, a real
# Celery worker and a local capture SMTP server, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export NEWSLETTER_VAR_DIR="${NEWSLETTER_VAR_DIR:-$PWD/var/demo}"
export NEWSLETTER_POSTAL_ADDRESS="${NEWSLETTER_POSTAL_ADDRESS:-Info War Weekly, 1 Example Street, 12345 Example City}"
unset NEWSLETTER_DATABASE_URL NEWSLETTER_BROKER_URL
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export NEWSLETTER_SMTP_URL="smtp://127.0.0.1:$port"
outbox="$NEWSLETTER_VAR_DIR/outbox"

nl() { printf '\n\033[1m$ newsletter %s\033[0m\n' "$*" >&2; .venv/bin/newsletter "$@"; }
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  .venv/bin/newsletter broker stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

[ -d "$NEWSLETTER_VAR_DIR/redis" ] && .venv/bin/newsletter broker stop >/dev/null 2>&1 || true
rm -rf "$NEWSLETTER_VAR_DIR"
mkdir -p "$NEWSLETTER_VAR_DIR"

nl db upgrade
nl lists create weekly --name "This Week in Info War" --from-email news@example.org --from-name "Info War Weekly"
nl subscribers import weekly examples/subscribers.csv --confirmed
nl lists show weekly
issue=$(nl issues create weekly examples/issues/this-week-in-info-war.md | tail -n 1)
nl issues preview "$issue"

nl broker start
printf '\n\033[1m$ newsletter smtp-capture --port %s --maildir %s &\033[0m\n' "$port" "$outbox" >&2
.venv/bin/newsletter smtp-capture --port "$port" --maildir "$outbox" > "$NEWSLETTER_VAR_DIR/smtp-capture.log" 2>&1 &
pids+=($!)
printf '\033[1m$ newsletter worker --concurrency 2 &\033[0m\n' >&2
.venv/bin/newsletter worker --concurrency 2 > "$NEWSLETTER_VAR_DIR/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "ready" "$NEWSLETTER_VAR_DIR/worker.log" 2>/dev/null && break; sleep 0.2; done

send=$(nl send "$issue" --wait | tail -n 1)
nl sends status "$send"

received=$(find "$outbox/new" -type f | wc -l)
cat <<DONE

Delivered: $received messages captured by the local SMTP server.
  Messages (one .eml file each): $outbox/new/
  HTML preview of the issue:     $NEWSLETTER_VAR_DIR/preview/issue-$issue.html
  Plain-text preview:            $NEWSLETTER_VAR_DIR/preview/issue-$issue.txt
  Delivery log:                  NEWSLETTER_VAR_DIR=$NEWSLETTER_VAR_DIR .venv/bin/newsletter sends log $send
Worker, capture server and embedded Redis are stopped now; the database stays in $NEWSLETTER_VAR_DIR.

To look around in the admin UI (issues, sends and their logs, subscribers):
  export NEWSLETTER_VAR_DIR=$NEWSLETTER_VAR_DIR
  .venv/bin/newsletter admin create-user --username you --role admin
  .venv/bin/newsletter web          # then open http://localhost:8000/admin/
DONE
