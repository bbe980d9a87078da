#!/usr/bin/env bash
# The simulator part of `make test`: SIM_SEEDS seeds in all (default 1000) over n = 4 and
# n = 7, with crash and network faults, Byzantine validators up to f (a random mix of every
# behaviour, and each adversary alone), and one twin; then the negative control (2 twins at
# n = 4 > f) must report violations. Longer runs by hand:
#   SIM_SEEDS=20000 scripts/sim-suite.sh
#   tally sim --validators 4 --byzantine 1 --adversary all --seeds 10000
#   tally sim --validators 7 --byzantine 2 --adversary all --seeds 3000
set -euo pipefail
TALLY=${TALLY:-${CARGO_TARGET_DIR:-$HOME/.cache/tally/target}/debug/tally}
SEEDS=${SIM_SEEDS:-1000}
# Each configuration gets a share (at least 2 seeds); every run prints its first seed, so a
# failure replays.
part() { local n=$(( SEEDS * $1 / 1000 )); echo $(( n < 2 ? 2 : n )); }
"$TALLY" sim --protocol pbft --validators 4 --seeds "$(part 150)"
"$TALLY" sim --protocol pbft --validators 4 --byzantine 1 --adversary all --seeds "$(part 250)"
"$TALLY" sim --protocol pbft --validators 4 --twins 1 --seeds "$(part 80)"
"$TALLY" sim --protocol pbft --validators 7 --seeds "$(part 80)"
"$TALLY" sim --protocol pbft --validators 7 --byzantine 2 --adversary all --seeds "$(part 200)"
# Each adversary alone, so none hides behind another: 20 per mille each.
for adversary in $("$TALLY" sim --adversary list | sed 's/^adversaries: all, //; s/,//g'); do
    "$TALLY" sim --protocol pbft --validators 4 --byzantine 1 --adversary "$adversary" \
        --seeds "$(part 20)"
done

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
