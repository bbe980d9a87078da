//! tally-p2p
