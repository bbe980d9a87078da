//! tally-monitoring
