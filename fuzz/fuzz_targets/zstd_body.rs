//! The agent's zstd body decoder fed arbitrary bytes in arbitrary pieces:
//! errors are fine, panics are not, and output comes in bounded pieces.
#![no_main]

use fileagent::wire::codec::{Decompressor, PIECE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = 1 + step as usize * 17;
    let mut d = Decompressor::new().unwrap();
    let mut total = 0usize;
    for piece in rest.chunks(step) {
        d.feed(piece);
        loop {
            match d.next_piece() {
                Ok(Some(out)) => {
                    assert!(out.len() <= PIECE_LEN);
                    total += out.len();
                    // The agent stops at the declared size; so does this.
                    if total > 64 << 20 {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = d.is_complete();
});
