//! Election timeouts from the driver's entropy: the cores never draw randomness themselves.

use crate::protocol::Millis;

/// A timeout in `[min, max)`, drawn from `state` (the driver's entropy, mixed in at every
/// tick) and advancing it (xorshift64*), so several timeouts between two ticks differ.
pub(crate) fn election_timeout(state: &mut u64, min: Millis, max: Millis) -> Millis {
    let mut x = *state | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    min + x.wrapping_mul(0x2545_F491_4F6C_DD1D) % max.saturating_sub(min).max(1)
}
