#!/usr/bin/env bash
# The simulator part of `make test`: SIM_SEEDS seeds in all (default 2000) over n = 4 and
# n = 7, with crash and network faults, Byzantine validators up to f, and one twin; then the
# negative control (2 twins at n = 4 > f) must report violations. Longer runs by hand:
#   SIM_SEEDS=20000 scripts/sim-suite.sh     or     tally sim --validators 4 --seeds 10000
set -euo pipefail
TALLY=${TALLY:-${CARGO_TARGET_DIR:-$HOME/.cache/tally/target}/debug/tally}
SEEDS=${SIM_SEEDS:-2000}
# Each configuration gets a share; every run prints its first seed, so a failure replays.
part() { echo $(( SEEDS * $1 / 100 )); }
"$TALLY" sim --protocol pbft --validators 4 --seeds "$(part 25)"
"$TALLY" sim --protocol pbft --validators 4 --byzantine 1 --seeds "$(part 25)"
"$TALLY" sim --protocol pbft --validators 4 --twins 1 --seeds "$(part 10)"
"$TALLY" sim --protocol pbft --validators 7 --seeds "$(part 15)"
"$TALLY" sim --protocol pbft --validators 7 --byzantine 2 --seeds "$(part 25)"

echo "negative control: 2 twins at n = 4 must break agreement in some seeds"
if "$TALLY" sim --protocol pbft --validators 4 --twins 2 --seeds 60 --liveness-bound-ms 5000 \
    > /tmp/tally-negative-control.$$ 2>&1; then
    cat /tmp/tally-negative-control.$$
    echo "FAIL: the checkers found no violation with more than f faulty validators"
    rm -f /tmp/tally-negative-control.$$
    exit 1
fi
grep -E "violations:|agreement" /tmp/tally-negative-control.$$ | head -3
rm -f /tmp/tally-negative-control.$$
echo "negative control: violations found, as they must be"
