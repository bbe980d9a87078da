#!/usr/bin/env bash
# The simulator part of `make test`. PBFT: SIM_SEEDS seeds in all (default 1000) over n = 4 and
# n = 7, with crash and network faults, Byzantine validators up to f (a random mix of every
# behaviour, and each adversary alone), and one twin; then the negative control (2 twins at
# n = 4 > f) must report violations. Raft: RAFT_SIM_SEEDS seeds (default 2000) at each of
# n = 3 and n = 5, then its negative control (replicas that forget their vote on restart).
# Multi-Paxos: PAXOS_SIM_SEEDS (default 2000) at each of n = 3 and n = 5 with quorums drawn
# per seed, then its negative control (q1 + q2 = n).
# Longer runs by hand:
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

# A negative control: `tally sim ARGS…` must report violations (and exit non-zero).
expect_violations() {
    local what=$1 pattern=$2 out
    shift 2
    echo "negative control: $what"
    out=$(mktemp)
    if "$TALLY" sim "$@" > "$out" 2>&1; then
        cat "$out"
        echo "FAIL: the checkers found no violation"
        rm -f "$out"
        exit 1
    fi
    grep -E "violations:|$pattern" "$out" | head -3 || true
    rm -f "$out"
    echo "negative control: violations found, as they must be"
}

RAFT_SEEDS=${RAFT_SIM_SEEDS:-2000}
"$TALLY" sim --protocol raft --validators 3 --seeds "$RAFT_SEEDS"
"$TALLY" sim --protocol raft --validators 5 --seeds "$RAFT_SEEDS"
expect_violations "raft replicas that forget their vote on restart must elect two leaders of one term" \
    "election safety" --protocol raft --validators 3 --seeds 300 --seed 1 --forget-vote-on-restart

PAXOS_SEEDS=${PAXOS_SIM_SEEDS:-2000}
"$TALLY" sim --protocol multipaxos --validators 3 --seeds "$PAXOS_SEEDS"
"$TALLY" sim --protocol multipaxos --validators 5 --seeds "$PAXOS_SEEDS"
expect_violations "multi-paxos with q1 + q2 = n must choose two values for one slot" \
    "state-machine safety" --protocol multipaxos --validators 3 --quorums 1,2 --seeds 300 --seed 1
