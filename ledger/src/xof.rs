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
//! slower). Inputs longer than one chunk (1024 bytes) take the crate's path, and so does
//! every input on a CPU with AVX-512 (F and VL), where the crate computes sixteen blocks side
//! by side and is ≈ 3× faster than this.

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
        if crate_is_wide() {
            self.expand_with_crate(parts, out)
        } else {
            self.expand_four_wide(parts, out)
        }
    }

    /// [`Context::expand`] four output blocks at a time (inputs past one chunk: the crate).
    fn expand_four_wide<const LANES: usize>(&self, parts: &[&[u8]], out: &mut [u16; LANES]) {
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
            let flags = DERIVE_KEY_MATERIAL | if b == 0 { CHUNK_START } else { 0 };
            cv = compress_chunk_block(&cv, &input[b * BLOCK..(b + 1) * BLOCK], flags);
        }
        let last = (blocks - 1) * BLOCK;
        let block_len = (len - last) as u32;
        let mut flags = DERIVE_KEY_MATERIAL | CHUNK_END | ROOT;
        if blocks == 1 {
            flags |= CHUNK_START;
        }
        let schedule = schedule(&input[last..last + BLOCK]);
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
        // Sixteen blocks per call: the crate's AVX-512 path computes that many side by side.
        let mut bytes = [0u8; 16 * BLOCK];
        for block in out.chunks_mut(16 * BLOCK / 2) {
            let bytes = &mut bytes[..2 * block.len()];
            reader.fill(bytes);
            for (lane, pair) in block.iter_mut().zip(bytes.chunks_exact(2)) {
                *lane = u16::from_le_bytes([pair[0], pair[1]]);
            }
        }
    }
}

/// Whether the blake3 crate computes extendable output many blocks at a time on this CPU
/// (its AVX-512 path, which needs AVX-512F and AVX-512VL): there it is ≈ 3× faster than the
/// four-wide path below (`cargo bench -p tally-ledger --bench state`), so it is used.
fn crate_is_wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut w = [0u32; N];
    for (word, b) in w.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    w
}

/// A 32-bit word, or a vector of them (one per output block computed side by side): what
/// the compression needs of it.
trait Word: Copy {
    fn splat(x: u32) -> Self;
    fn add(self, other: Self) -> Self;
    fn xor(self, other: Self) -> Self;
    fn rotr<const N: u32>(self) -> Self;
}

impl Word for u32 {
    #[inline(always)]
    fn splat(x: u32) -> u32 {
        x
    }
    #[inline(always)]
    fn add(self, other: u32) -> u32 {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn xor(self, other: u32) -> u32 {
        self ^ other
    }
    #[inline(always)]
    fn rotr<const N: u32>(self) -> u32 {
        self.rotate_right(N)
    }
}

/// One vector of WIDE lanes; the state of WIDE compressions side by side is 16 of them.
type Lanes = wide::u32x4;

impl Word for Lanes {
    #[inline(always)]
    fn splat(x: u32) -> Lanes {
        Lanes::splat(x)
    }
    #[inline(always)]
    fn add(self, other: Lanes) -> Lanes {
        self + other
    }
    #[inline(always)]
    fn xor(self, other: Lanes) -> Lanes {
        self ^ other
    }
    #[inline(always)]
    fn rotr<const N: u32>(self) -> Lanes {
        (self >> N) | (self << (32 - N))
    }
}

#[inline(always)]
fn g<W: Word>(v: &mut [W; 16], (a, b, c, d): (usize, usize, usize, usize), x: u32, y: u32) {
    v[a] = v[a].add(v[b]).add(W::splat(x));
    v[d] = v[d].xor(v[a]).rotr::<16>();
    v[c] = v[c].add(v[d]);
    v[b] = v[b].xor(v[c]).rotr::<12>();
    v[a] = v[a].add(v[b]).add(W::splat(y));
    v[d] = v[d].xor(v[a]).rotr::<8>();
    v[c] = v[c].add(v[d]);
    v[b] = v[b].xor(v[c]).rotr::<7>();
}

/// One round over a state, with its message words.
#[inline(always)]
fn round<W: Word>(v: &mut [W; 16], m: &[u32; 16]) {
    g(v, (0, 4, 8, 12), m[0], m[1]);
    g(v, (1, 5, 9, 13), m[2], m[3]);
    g(v, (2, 6, 10, 14), m[4], m[5]);
    g(v, (3, 7, 11, 15), m[6], m[7]);
    g(v, (0, 5, 10, 15), m[8], m[9]);
    g(v, (1, 6, 11, 12), m[10], m[11]);
    g(v, (2, 7, 8, 13), m[12], m[13]);
    g(v, (3, 4, 9, 14), m[14], m[15]);
}

/// BLAKE3's permutation of the message words between rounds.
#[inline(always)]
fn permute(m: &[u32; 16]) -> [u32; 16] {
    std::array::from_fn(|i| m[MSG_PERMUTATION[i]])
}

/// A block's message words for each round (BLAKE3 permutes them between rounds).
fn schedule(block: &[u8]) -> [[u32; 16]; ROUNDS] {
    let mut schedule = [words::<16>(block); ROUNDS];
    for r in 1..ROUNDS {
        schedule[r] = permute(&schedule[r - 1]);
    }
    schedule
}

/// The state a compression starts from.
fn initial<W: Word>(cv: &[u32; 8], low: W, high: W, block_len: u32, flags: u32) -> [W; 16] {
    let s = W::splat;
    [
        s(cv[0]),
        s(cv[1]),
        s(cv[2]),
        s(cv[3]),
        s(cv[4]),
        s(cv[5]),
        s(cv[6]),
        s(cv[7]),
        s(IV[0]),
        s(IV[1]),
        s(IV[2]),
        s(IV[3]),
        low,
        high,
        s(block_len),
        s(flags),
    ]
}

/// One BLAKE3 compression of a chunk's block (counter 0): the new chaining value.
fn compress_chunk_block(cv: &[u32; 8], block: &[u8], flags: u32) -> [u32; 8] {
    let mut v = initial::<u32>(cv, 0, 0, BLOCK as u32, flags);
    let mut m = words::<16>(block);
    for r in 0..ROUNDS {
        round(&mut v, &m);
        if r + 1 < ROUNDS {
            m = permute(&m);
        }
    }
    let mut out = [0u32; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = v[i] ^ v[i + 8];
    }
    out
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
    let mut v = initial(cv, Lanes::from(low), Lanes::from(high), block_len, flags);
    for m in schedule {
        round(&mut v, m);
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
            let parts = [&input[..cut], &input[cut..len]];
            let expected = with_crate("tally xof test", &input[..len]);
            ctx.expand_four_wide(&parts, &mut out);
            assert_eq!(out, expected, "four wide, length {len}");
            ctx.expand_with_crate(&parts, &mut out);
            assert_eq!(out, expected, "through the crate, length {len}");
            ctx.expand(&parts, &mut out);
            assert_eq!(out, expected, "as dispatched, length {len}");
        }
    }

    #[test]
    fn longer_output_than_one_group() {
        let ctx = Context::new("ctx");
        let mut out = [0u16; 4096];
        ctx.expand_four_wide(&[b"abc"], &mut out);
        let mut through_crate = [0u16; 4096];
        ctx.expand_with_crate(&[b"abc"], &mut through_crate);
        assert_eq!(out, through_crate);
        let mut h = blake3::Hasher::new_derive_key("ctx");
        h.update(b"abc");
        let mut bytes = vec![0u8; 8192];
        h.finalize_xof().fill(&mut bytes);
        for (i, lane) in out.iter().enumerate() {
            assert_eq!(*lane, u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]));
        }
    }
}
