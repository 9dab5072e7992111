#!/usr/bin/env bash
# Before the ACL starts (stack.sh runs it once Baedal is ready, so its
# schema exists): the acl role's grants in the legacy database and the
# publication its change feed reads. Idempotent.
. "$(dirname "$0")/lib.sh"
bash "$(dirname "$0")/postgres.sh" sql legacy "$KIT_ROOT/acl/sql/legacy-access.sql"
bash "$(dirname "$0")/postgres.sh" sql legacy "$(dirname "$0")/drop-lost-acl-slot.sql"
