//! Every routine against a plain byte loop, for every length up to a few blocks past each threshold
//! and every alignment of a 16-byte vector, with bytes that differ from position to position (so a
//! piece written to the wrong offset shows).

use super::{REP_THRESHOLD, compare, copy, fill, move_bytes};

/// Lengths around every size class: the short pieces, the loop, `rep movsb`.
fn lengths() -> impl Iterator<Item = usize> {
    (0..=300).chain(REP_THRESHOLD - 70..=REP_THRESHOLD + 70).chain([4096, 4099, 10_000, 65_537])
}

/// A pattern no offset of which repeats within 251 bytes.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed * 13) % 251) as u8).collect()
}

#[test]
fn a_copy_writes_exactly_the_source_bytes_and_nothing_around_them() {
    for n in lengths() {
        for (src_off, dest_off) in [(0, 0), (1, 0), (0, 3), (5, 11), (15, 1), (8, 8)] {
            let src = pattern(n + src_off, 1);
            let mut dest = vec![0xAA; n + dest_off + 32];
            // SAFETY: both buffers hold the n bytes from their offsets and are distinct allocations.
            unsafe { copy(dest.as_mut_ptr().add(dest_off), src.as_ptr().add(src_off), n) };
            assert_eq!(&dest[dest_off..dest_off + n], &src[src_off..], "length {n}, offsets {src_off}/{dest_off}");
            assert!(dest[..dest_off].iter().all(|b| *b == 0xAA), "length {n}: wrote before dest");
            assert!(dest[dest_off + n..].iter().all(|b| *b == 0xAA), "length {n}: wrote past dest");
        }
    }
}

#[test]
fn a_move_between_overlapping_ranges_gives_what_a_copy_through_a_buffer_gives() {
    for n in lengths().filter(|n| *n <= 5000) {
        for shift in [1usize, 2, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1000] {
            let len = n + shift;
            let original = pattern(len, 2);
            // dest above src (backward), then dest below src (forward).
            for (src_off, dest_off) in [(0, shift), (shift, 0)] {
                let mut buffer = original.clone();
                let mut expected = original.clone();
                expected.copy_within(src_off..src_off + n, dest_off);
                let base = buffer.as_mut_ptr();
                // SAFETY: both ranges lie inside `buffer` (len = n + shift); memmove allows overlap.
                unsafe { move_bytes(base.add(dest_off), base.add(src_off), n) };
                assert_eq!(buffer, expected, "length {n}, from {src_off} to {dest_off}");
            }
        }
    }
}

#[test]
fn a_fill_sets_exactly_the_given_bytes() {
    for n in lengths() {
        for (offset, byte) in [(0, 0u8), (3, 0xFF), (9, 0x5C)] {
            let mut dest = vec![0xAA; n + offset + 32];
            // SAFETY: dest holds n bytes from the offset.
            unsafe { fill(dest.as_mut_ptr().add(offset), byte, n) };
            assert!(dest[offset..offset + n].iter().all(|b| *b == byte), "length {n}, byte {byte}");
            assert!(dest[..offset].iter().all(|b| *b == 0xAA), "length {n}: wrote before dest");
            assert!(dest[offset + n..].iter().all(|b| *b == 0xAA), "length {n}: wrote past dest");
        }
    }
}

#[test]
fn a_comparison_orders_by_the_first_differing_byte_as_unsigned() {
    for n in (0..=200).chain([1000, 4099]) {
        let a = pattern(n, 3);
        // SAFETY (all calls below): both vectors hold n bytes.
        assert_eq!(unsafe { compare(a.as_ptr(), a.clone().as_ptr(), n) }, 0, "equal, length {n}");
        for at in 0..n {
            for (x, y) in [(0x01u8, 0x02u8), (0x7F, 0x80), (0x00, 0xFF)] {
                let (mut left, mut right) = (a.clone(), a.clone());
                left[at] = x;
                right[at] = y;
                // A later difference must not decide the order.
                if at + 1 < n {
                    left[n - 1] = 0xFF;
                    right[n - 1] = 0x00;
                }
                let below = unsafe { compare(left.as_ptr(), right.as_ptr(), n) };
                let above = unsafe { compare(right.as_ptr(), left.as_ptr(), n) };
                assert!(below < 0, "length {n}, difference at {at}: {x:#x} vs {y:#x} gave {below}");
                assert!(above > 0, "length {n}, difference at {at}: {y:#x} vs {x:#x} gave {above}");
            }
        }
    }
}

#[test]
fn a_comparison_agrees_with_slice_ordering_on_unaligned_inputs() {
    let data = pattern(600, 4);
    let other: Vec<u8> = data.iter().map(|b| b ^ u8::from(b % 97 == 0)).collect();
    for n in 0..=260 {
        for (ao, bo) in [(0, 0), (1, 3), (7, 0), (15, 9)] {
            let (left, right) = (&data[ao..ao + n], &other[bo..bo + n]);
            // SAFETY: both slices hold n bytes.
            let got = unsafe { compare(left.as_ptr(), right.as_ptr(), n) };
            assert_eq!(got.signum(), left.cmp(right) as i32, "length {n}, offsets {ao}/{bo}");
        }
    }
}
