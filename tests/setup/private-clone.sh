#!/usr/bin/env bash
# Set-up where newcomers really clone: a fresh clone of this repository in
# a private folder (mode 700, under $HOME: for root, /root, which the
# `postgres` OS user cannot reach), on its own port offset so that it runs
# beside this clone's stack. It starts PostgreSQL and RabbitMQ there, checks
# that both answer on the moved ports and that `make status` tells the two
# clones' ports apart, then `make clean` there removes all it made, the
# cluster kept outside the private folder included.
#
#   tests/setup/private-clone.sh           make infra in the clone (a minute)
#   tests/setup/private-clone.sh --full    make up and make test there as well
#                                          (a whole build: half an hour on 2 cores)
#
# It clones what is committed (HEAD), not uncommitted changes.
# KIT_TEST_PORT_OFFSET (default 200) and KIT_TEST_PRIVATE_PARENT (default
# $HOME) choose where the clone runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OFFSET=${KIT_TEST_PORT_OFFSET:-200}
PARENT=${KIT_TEST_PRIVATE_PARENT:-$HOME}
unset KIT_TEST_PORT_OFFSET KIT_TEST_PRIVATE_PARENT
FULL=""
case "${1:-}" in
"") ;;
--full) FULL=1 ;;
*)
	echo "usage: $0 [--full]" >&2
	exit 2
	;;
esac

# The clone must see none of the caller's stack: a KIT_RUN, a port or a
# URL exported here (say, from sourcing this clone's .run/stack.env) would
# point it at this clone's stack, and its `make clean` at this clone's data.
for var in $(compgen -e); do
	case $var in
	KIT_* | DATABASE_URL | *_PORT | *__PORT | *_URL | *__URL | STRANGLER_* | BAEDAL_* | ACL_* | ORDER_HISTORY_* | ORDERING_* | PG_SANDBOX_*) unset "$var" ;;
	esac
done

fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

# This clone's PostgreSQL port, to see the other clone named in make status.
MAIN_PG_PORT=$(bash -c ". '$ROOT/infra/local/lib.sh' && echo \$KIT_PG_PORT")

WORK=$(mktemp -d "$PARENT/kit-private.XXXXXX") # mktemp makes it mode 700
CLONE=$WORK/kit
cleanup() {
	if [ -f "$CLONE/Makefile" ]; then (cd "$CLONE" && make clean >/dev/null 2>&1) || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> cloning into $CLONE (folder mode $(stat -c %a "$WORK"), KIT_PORT_OFFSET=$OFFSET)"
git clone -q "$ROOT" "$CLONE"
# The CI layout keeps the design beside the clone; the stack does not need it.
cd "$CLONE"
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && runuser -u postgres -- test -x "$CLONE" 2>/dev/null; then
	fail "the postgres user can reach $CLONE, so this would not test a private folder (is $PARENT mode 700?)"
fi

started=$(date +%s)
KIT_PORT_OFFSET=$OFFSET make infra
echo "==> make infra took $(($(date +%s) - started)) s"

# The offset was saved: later commands in the clone need not repeat it.
grep -qx "KIT_PORT_OFFSET=$OFFSET" .run/ports.env || fail ".run/ports.env does not hold the offset"
set -a
# shellcheck disable=SC1091
. .run/stack.env
set +a
[ "$KIT_PG_PORT" = $((54320 + OFFSET)) ] || fail "PostgreSQL's port is $KIT_PG_PORT, not 54320 + $OFFSET"
[ "$STRANGLER_HTTP__PORT" = $((8000 + OFFSET)) ] || fail "the front door is $STRANGLER_HTTP__PORT, not 8000 + $OFFSET"

pg=$(readlink -f .run/postgres)
echo "==> the clone's cluster lives in $pg"
if [ "$(id -u)" = 0 ]; then
	case $pg in "$WORK"/*) fail "as root, the cluster must live where the postgres user can reach it, not in $pg" ;; esac
fi
"$(bash -c '. infra/local/lib.sh; find_pg_bin')/psql" "$KIT_DB_URL_LEGACY" -XAtc 'SELECT 1' >/dev/null ||
	fail "the clone's PostgreSQL does not answer on $KIT_PG_PORT"
bash infra/local/rabbitmq.sh status | grep -q "running   amqp://127.0.0.1:$KIT_AMQP_PORT" ||
	fail "the clone's RabbitMQ does not answer on $KIT_AMQP_PORT"

status=$(make status 2>&1 || true)
printf '%s\n' "$status" | sed 's/^/    /'
printf '%s\n' "$status" | grep -Eq "^  postgres +$KIT_PG_PORT +this clone" ||
	fail "make status does not say the clone owns $KIT_PG_PORT"

# When this clone's stack runs too, the other clone sees whose port it is.
if (exec 3<>"/dev/tcp/127.0.0.1/$MAIN_PG_PORT") 2>/dev/null; then
	holder=$(KIT_PG_PORT=$MAIN_PG_PORT bash infra/local/doctor.sh ports | awk '$1 == "postgres"')
	echo "    seen from the private clone: $holder"
	grep -q "the clone at $ROOT " <<<"$holder" || fail "port $MAIN_PG_PORT is not named as $ROOT's"
else
	echo "    SKIP: $ROOT's stack is not running, so the two clones were not seen side by side (make infra there first)"
fi

if [ -n "$FULL" ]; then
	started=$(date +%s)
	make up
	echo "==> make up took $(($(date +%s) - started)) s"
	started=$(date +%s)
	make test
	echo "==> make test took $(($(date +%s) - started)) s"
fi

make clean >/dev/null
[ ! -e "$pg" ] || fail "make clean left $pg behind"
echo "==> PASS: a clone in a private folder ran its own stack on offset $OFFSET, and make clean removed it all"
