//! The network between crash-fault replicas in the Raft and Multi-Paxos simulators: loss,
//! duplication, and partitions of every shape, decided by the seed.

use super::rng::Rng;

pub struct Links {
    blocked: Vec<Vec<bool>>,
    pub loss: f64,
    pub duplicate: f64,
}

/// Largest one-way delay, simulated milliseconds (messages are delayed uniformly in
/// `[1, MAX_DELAY_MS]`, so they are reordered).
pub const MAX_DELAY_MS: u64 = 30;

impl Links {
    pub fn new(n: usize, rng: &mut Rng) -> Links {
        Links {
            blocked: vec![vec![false; n]; n],
            loss: [0.0, 0.05, 0.2][rng.range(0, 2) as usize],
            duplicate: [0.0, 0.05][rng.range(0, 1) as usize],
        }
    }

    /// Changes the partitions: two groups (possibly one-way), one replica cut from some
    /// peers but not others, `leader` isolated alone, or all links back. Returns the fault's
    /// name, or `None` when there was no leader to isolate.
    pub fn partition(&mut self, rng: &mut Rng, leader: Option<usize>) -> Option<&'static str> {
        let n = self.blocked.len();
        match rng.range(0, 3) {
            0 => {
                let group: Vec<bool> = (0..n).map(|_| rng.chance(0.5)).collect();
                let one_way = rng.chance(0.3);
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = group[a] != group[b] && (!one_way || group[a]);
                    }
                }
                Some(if one_way {
                    "one_way_partition"
                } else {
                    "partition"
                })
            }
            1 => {
                let x = rng.range(0, n as u64 - 1) as usize;
                for y in 0..n {
                    if y != x && rng.chance(0.5) {
                        self.blocked[x][y] = true;
                        self.blocked[y][x] = true;
                    }
                }
                Some("partial_partition")
            }
            2 => {
                let l = leader?;
                for y in 0..n {
                    if y != l {
                        self.blocked[l][y] = true;
                        self.blocked[y][l] = true;
                    }
                }
                Some("leader_isolated")
            }
            _ => {
                self.heal();
                Some("partition_healed")
            }
        }
    }

    pub fn heal(&mut self) {
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
    }

    /// How many copies of a message from `from` to `to` arrive (0 when blocked or lost).
    pub fn copies(&self, rng: &mut Rng, from: usize, to: usize) -> usize {
        if self.blocked[from][to] || rng.chance(self.loss) {
            0
        } else if rng.chance(self.duplicate) {
            2
        } else {
            1
        }
    }
}
