//! The vendored chunker (rewritten for speed, see
//! docs/decisions/0003-vendored-rustic-core.md) cuts exactly where rustic_core
//! 0.13.0's byte-at-a-time loop over `rustic_cdc::Rabin64` cut: chunk
//! boundaries decide deduplication against every set already stored.

use std::io::Read;

use rustic_cdc::{Rabin64, RollingHash64};

/// The chunk lengths of rustic_core 0.13.0's loop (the reference).
fn reference(data: &[u8], poly: u64, size: usize, min: usize, max: usize) -> Vec<usize> {
    let mask = size as u64 - 1;
    let mut rabin = Rabin64::new_with_polynom(6, &poly);
    let mut lens = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data.len() - at < min {
            lens.push(data.len() - at);
            break;
        }
        let mut len = min;
        rabin.reset_and_prefill_window(&mut data[at + min - 64..at + min].iter().copied());
        while len < max && (rabin.hash & mask) != 0 && at + len < data.len() {
            rabin.slide(data[at + len]);
            len += 1;
        }
        lens.push(len);
        at += len;
    }
    lens
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// A reader handing out its data in pieces of varying size, as a pipe does.
struct Ragged {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl Read for Ragged {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = (self.step * 7919 + 13) % 100_003;
        let n = (self.step + 1)
            .min(buf.len())
            .min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn chunk_boundaries_match_rustic_cdc() {
    // the polynomial of rustic_cdc's tests, and another of degree 53.
    for poly in [0x003D_A335_8B4D_C173_u64, 0x0030_6A48_C4B9_C5B1] {
        for (len, size, min, max) in [
            // restic's real sizes: 1 MiB average, 512 KiB to 8 MiB.
            (24 << 20, 1 << 20, 512 << 10, 8 << 20),
            // small chunks: many boundaries, and the maximum reached.
            (3 << 20, 8192, 4096, 65536),
            (5 << 20, 65536, 1024, 300_000),
            (300, 4096, 1024, 8192),
            (20_000, 256, 128, 512),
        ] {
            let mut data = noise(len, poly ^ len as u64);
            // A run of zeros ends chunks at the minimum or the maximum.
            data[len / 5..2 * len / 5].fill(0);
            let expected = reference(&data, poly, size, min, max);
            let reader = Ragged {
                data: data.clone(),
                at: 0,
                step: len,
            };
            let (got, _) = rustic_core::rabin_chunk_lengths(poly, size, min, max, reader, None)
                .expect("chunking");
            assert_eq!(
                got, expected,
                "poly {poly:x}, {len} bytes, {min}/{size}/{max}"
            );
            assert_eq!(got.iter().sum::<usize>(), len);
        }
    }
}

/// A changed file is chunked with its previous chunks as a guide: the chunks
/// must be exactly the rolling hash's, whatever the change, and an unchanged
/// stretch must be taken from the guide.
#[test]
fn guided_chunks_are_the_rolling_hash_chunks() {
    let poly = 0x003D_A335_8B4D_C173_u64;
    for (len, size, min, max) in [
        (6 << 20, 8192, 4096, 65536),
        (24 << 20, 1 << 20, 512 << 10, 8 << 20),
    ] {
        let old = noise(len, 99);
        let mut edits: Vec<(&str, Vec<u8>)> = vec![("unchanged", old.clone())];
        let mut v = old.clone();
        v[10..60].fill(7);
        edits.push(("header changed", v));
        let mut v = old.clone();
        v.splice(len / 2..len / 2, noise(3000, 5));
        edits.push(("insertion", v));
        let mut v = old.clone();
        v.drain(len / 3..len / 3 + 5000);
        edits.push(("deletion", v));
        let mut v = old.clone();
        v.extend(noise(3000, 6));
        edits.push(("appended", v));
        edits.push(("truncated", old[..len - len / 7].to_vec()));
        edits.push(("empty", Vec::new()));
        edits.push(("unrelated", noise(len, 3)));
        for (what, new) in edits {
            let expected = reference(&new, poly, size, min, max);
            let reader = Ragged {
                data: new.clone(),
                at: 0,
                step: 3,
            };
            let (got, predicted) =
                rustic_core::rabin_chunk_lengths(poly, size, min, max, reader, Some(&old))
                    .expect("chunking");
            assert_eq!(got, expected, "{what}, {len} bytes");
            let n = expected.len();
            let at_least = match what {
                "unchanged" => n,
                "header changed" | "truncated" => n.saturating_sub(2),
                "insertion" | "deletion" | "appended" => n.saturating_sub(4),
                _ => 0,
            };
            assert!(
                predicted >= at_least,
                "{what}: {predicted} of {n} chunks predicted"
            );
            if what == "unrelated" || what == "empty" {
                assert_eq!(predicted, 0, "{what}");
            }
        }
    }
}
