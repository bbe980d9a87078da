//! tally-genesis
