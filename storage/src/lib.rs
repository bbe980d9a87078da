//! tally-storage
