//! The state root's entry expansion: BLAKE3's extendable output in derive-key mode, computed
//! with the output blocks four at a time.
//!
//! The bytes are exactly those of `blake3::Hasher::new_derive_key(context)` … `finalize_xof()`
//! (the tests compare the two on every input length up to and past one chunk). The blake3
//! crate computes extendable output one 64-byte block after another unless the CPU has
//! AVX-512; an entry's 2048 bytes are 32 such blocks, and in profiles of a loaded node they
//! were ≈ 7% of its CPU. The output blocks differ only in their counter, so here the same
//! compression runs on four counters side by side, one 128-bit vector per state word (the
//! `wide` crate's portable vectors; eight lanes in two vectors spilled registers and were
//! slower). Inputs longer than one chunk (1024 bytes) take the crate's path.

/// BLAKE3's initialisation vector (SHA-256's).
const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];
const MSG_PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const ROOT: u32 = 8;
const DERIVE_KEY_MATERIAL: u32 = 64;
const BLOCK: usize = 64;
const CHUNK: usize = 1024;
const ROUNDS: usize = 7;
/// Output blocks computed together.
const WIDE: usize = 4;

/// A derive-key context, prepared once: its key words.
pub(crate) struct Context {
    key_words: [u32; 8],
    key: [u8; 32],
}

impl Context {
    pub(crate) fn new(context: &str) -> Context {
        let key = blake3::hazmat::hash_derive_key_context(context);
        Context {
            key_words: words::<8>(&key),
            key,
        }
    }

    /// Fills `out` (a whole number of 64-byte blocks' worth of u16 lanes, little-endian) with
    /// the extendable output of the parts' concatenation.
    pub(crate) fn expand<const LANES: usize>(&self, parts: &[&[u8]], out: &mut [u16; LANES]) {
        const { assert!(LANES.is_multiple_of(WIDE * BLOCK / 2)) };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > CHUNK {
            return self.expand_with_crate(parts, out);
        }
        let mut input = [0u8; CHUNK];
        let mut at = 0;
        for p in parts {
            input[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        // Every block but the last goes into the chaining value; the last one (possibly
        // partial, zero-padded; an empty input has one empty block) is the root's.
        let blocks = len.div_ceil(BLOCK).max(1);
        let mut cv = self.key_words;
        for b in 0..blocks - 1 {
            let m = words::<16>(&input[b * BLOCK..(b + 1) * BLOCK]);
            let flags = DERIVE_KEY_MATERIAL | if b == 0 { CHUNK_START } else { 0 };
            let v = compress(&cv, &m, 0, BLOCK as u32, flags);
            cv.copy_from_slice(&v[..8]);
        }
        let last = (blocks - 1) * BLOCK;
        let block_len = (len - last) as u32;
        let mut flags = DERIVE_KEY_MATERIAL | CHUNK_END | ROOT;
        if blocks == 1 {
            flags |= CHUNK_START;
        }
        let mut schedule = [[0u32; 16]; ROUNDS];
        schedule[0] = words::<16>(&input[last..last + BLOCK]);
        for r in 1..ROUNDS {
            for (i, &p) in MSG_PERMUTATION.iter().enumerate() {
                schedule[r][i] = schedule[r - 1][p];
            }
        }
        // Each output block is 32 lanes; WIDE blocks at a time.
        let per_group = WIDE * BLOCK / 2;
        for (g, lanes) in out.chunks_exact_mut(per_group).enumerate() {
            let v = compress_wide(&cv, &schedule, (g * WIDE) as u64, block_len, flags);
            for (b, block) in lanes.chunks_exact_mut(BLOCK / 2).enumerate() {
                for w in 0..16 {
                    let word = if w < 8 {
                        v[w][b] ^ v[w + 8][b]
                    } else {
                        v[w][b] ^ cv[w - 8]
                    };
                    block[2 * w] = word as u16;
                    block[2 * w + 1] = (word >> 16) as u16;
                }
            }
        }
    }

    fn expand_with_crate<const LANES: usize>(&self, parts: &[&[u8]], out: &mut [u16; LANES]) {
        use blake3::hazmat::HasherExt;
        let mut h = blake3::Hasher::new_from_context_key(&self.key);
        for p in parts {
            h.update(p);
        }
        let mut reader = h.finalize_xof();
        let mut bytes = [0u8; BLOCK];
        for block in out.chunks_exact_mut(BLOCK / 2) {
            reader.fill(&mut bytes);
            for (lane, pair) in block.iter_mut().zip(bytes.chunks_exact(2)) {
                *lane = u16::from_le_bytes([pair[0], pair[1]]);
            }
        }
    }
}

fn words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut w = [0u32; N];
    for (word, b) in w.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    w
}

#[inline(always)]
fn g(v: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize, x: u32, y: u32) {
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(12);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
    v[d] = (v[d] ^ v[a]).rotate_right(8);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(7);
}

/// One BLAKE3 compression: the 16-word output (first half: the chaining value).
fn compress(cv: &[u32; 8], m: &[u32; 16], counter: u64, block_len: u32, flags: u32) -> [u32; 16] {
    let mut v = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        IV[0],
        IV[1],
        IV[2],
        IV[3],
        counter as u32,
        (counter >> 32) as u32,
        block_len,
        flags,
    ];
    let mut m = *m;
    for r in 0..ROUNDS {
        g(&mut v, 0, 4, 8, 12, m[0], m[1]);
        g(&mut v, 1, 5, 9, 13, m[2], m[3]);
        g(&mut v, 2, 6, 10, 14, m[4], m[5]);
        g(&mut v, 3, 7, 11, 15, m[6], m[7]);
        g(&mut v, 0, 5, 10, 15, m[8], m[9]);
        g(&mut v, 1, 6, 11, 12, m[10], m[11]);
        g(&mut v, 2, 7, 8, 13, m[12], m[13]);
        g(&mut v, 3, 4, 9, 14, m[14], m[15]);
        if r + 1 < ROUNDS {
            let prev = m;
            for (i, &p) in MSG_PERMUTATION.iter().enumerate() {
                m[i] = prev[p];
            }
        }
    }
    for i in 0..8 {
        v[i] ^= v[i + 8];
        v[i + 8] ^= cv[i];
    }
    v
}

/// One vector of WIDE lanes; the state of WIDE compressions side by side is 16 of them.
type Lanes = wide::u32x4;
type Wide = [Lanes; 16];

#[inline(always)]
fn rotr<const N: u32>(x: Lanes) -> Lanes {
    (x >> N) | (x << (32 - N))
}

#[inline(always)]
fn g_wide(v: &mut Wide, a: usize, b: usize, c: usize, d: usize, x: u32, y: u32) {
    v[a] = v[a] + v[b] + Lanes::splat(x);
    v[d] = rotr::<16>(v[d] ^ v[a]);
    v[c] += v[d];
    v[b] = rotr::<12>(v[b] ^ v[c]);
    v[a] = v[a] + v[b] + Lanes::splat(y);
    v[d] = rotr::<8>(v[d] ^ v[a]);
    v[c] += v[d];
    v[b] = rotr::<7>(v[b] ^ v[c]);
}

/// WIDE compressions of the same block and chaining value, at counters `first..first+WIDE`:
/// the raw state after the rounds, word-major (`v[word][block]`), before the output XORs.
fn compress_wide(
    cv: &[u32; 8],
    schedule: &[[u32; 16]; ROUNDS],
    first: u64,
    block_len: u32,
    flags: u32,
) -> [[u32; WIDE]; 16] {
    let mut low = [0u32; WIDE];
    let mut high = [0u32; WIDE];
    for l in 0..WIDE {
        let counter = first + l as u64;
        low[l] = counter as u32;
        high[l] = (counter >> 32) as u32;
    }
    let mut v: Wide = [
        Lanes::splat(cv[0]),
        Lanes::splat(cv[1]),
        Lanes::splat(cv[2]),
        Lanes::splat(cv[3]),
        Lanes::splat(cv[4]),
        Lanes::splat(cv[5]),
        Lanes::splat(cv[6]),
        Lanes::splat(cv[7]),
        Lanes::splat(IV[0]),
        Lanes::splat(IV[1]),
        Lanes::splat(IV[2]),
        Lanes::splat(IV[3]),
        Lanes::from(low),
        Lanes::from(high),
        Lanes::splat(block_len),
        Lanes::splat(flags),
    ];
    for m in schedule {
        g_wide(&mut v, 0, 4, 8, 12, m[0], m[1]);
        g_wide(&mut v, 1, 5, 9, 13, m[2], m[3]);
        g_wide(&mut v, 2, 6, 10, 14, m[4], m[5]);
        g_wide(&mut v, 3, 7, 11, 15, m[6], m[7]);
        g_wide(&mut v, 0, 5, 10, 15, m[8], m[9]);
        g_wide(&mut v, 1, 6, 11, 12, m[10], m[11]);
        g_wide(&mut v, 2, 7, 8, 13, m[12], m[13]);
        g_wide(&mut v, 3, 4, 9, 14, m[14], m[15]);
    }
    v.map(|x| x.to_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crate(context: &str, input: &[u8]) -> [u16; 1024] {
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(input);
        let mut bytes = [0u8; 2048];
        h.finalize_xof().fill(&mut bytes);
        let mut out = [0u16; 1024];
        for (lane, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        out
    }

    #[test]
    fn same_bytes_as_the_blake3_crate_at_every_length() {
        let ctx = Context::new("tally xof test");
        // Every length through two chunks: one block, block boundaries, the chunk boundary
        // (1024: the last length computed here) and the crate's path past it.
        let input: Vec<u8> = (0..2100u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in 0..=2100 {
            let mut out = [0u16; 1024];
            // Split in two parts anywhere: the concatenation is what counts.
            let cut = len / 3;
            ctx.expand(&[&input[..cut], &input[cut..len]], &mut out);
            assert_eq!(
                out,
                with_crate("tally xof test", &input[..len]),
                "length {len}"
            );
        }
    }

    #[test]
    fn longer_output_than_one_group() {
        let ctx = Context::new("ctx");
        let mut out = [0u16; 4096];
        ctx.expand(&[b"abc"], &mut out);
        let mut h = blake3::Hasher::new_derive_key("ctx");
        h.update(b"abc");
        let mut bytes = vec![0u8; 8192];
        h.finalize_xof().fill(&mut bytes);
        for (i, lane) in out.iter().enumerate() {
            assert_eq!(*lane, u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]));
        }
    }
}
