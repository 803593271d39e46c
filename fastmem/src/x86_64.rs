//! The x86_64 routines: SSE2 moves in overlapping 16-byte pieces, `rep movsb`/`rep stosb` for long
//! runs.

use core::arch::asm;
use core::arch::x86_64::{
    __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8, _mm_storeu_si128,
};
use core::ptr::{read_unaligned, write_unaligned};

/// From this many bytes on, copies and fills use `rep movsb`/`rep stosb` (glibc's default threshold
/// for 16-byte vectors): below it their start-up cost exceeds what the loop spends.
pub const REP_THRESHOLD: usize = 2048;

/// Bytes one loop iteration moves: four 16-byte registers.
const BLOCK: usize = 64;

#[inline(always)]
unsafe fn load(p: *const u8) -> __m128i {
    // SAFETY: the caller makes p readable for 16 bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(p.cast()) }
}

#[inline(always)]
unsafe fn store(p: *mut u8, v: __m128i) {
    // SAFETY: the caller makes p writable for 16 bytes; the store is unaligned.
    unsafe { _mm_storeu_si128(p.cast(), v) }
}

/// Four 16-byte registers from `p`.
#[inline(always)]
unsafe fn load_block(p: *const u8) -> [__m128i; 4] {
    // SAFETY: the caller makes p readable for 64 bytes.
    unsafe { [load(p), load(p.add(16)), load(p.add(32)), load(p.add(48))] }
}

#[inline(always)]
unsafe fn store_block(p: *mut u8, block: [__m128i; 4]) {
    // SAFETY: the caller makes p writable for 64 bytes.
    unsafe {
        store(p, block[0]);
        store(p.add(16), block[1]);
        store(p.add(32), block[2]);
        store(p.add(48), block[3]);
    }
}

/// Copies `n` bytes from `src` to `dest`.
///
/// # Safety
/// `src` readable and `dest` writable for `n` bytes, the two not overlapping (as C's `memcpy`).
#[inline(always)]
pub unsafe fn copy(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY (all three): the caller's contract; short moves and the loop also allow overlap.
    unsafe {
        if n <= BLOCK {
            short_move(dest, src, n);
        } else if n < REP_THRESHOLD {
            forward(dest, src, n);
        } else {
            rep_movsb(dest, src, n);
        }
    }
}

/// Copies `n` bytes from `src` to `dest`, which may overlap.
///
/// # Safety
/// `src` readable and `dest` writable for `n` bytes (as C's `memmove`).
#[inline(always)]
pub unsafe fn move_bytes(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY (all three): the caller's contract; each path is correct for the overlap it gets.
    unsafe {
        if n <= BLOCK {
            short_move(dest, src, n);
        } else if (dest as usize).wrapping_sub(src as usize) >= n {
            // `dest` before `src`, or apart: a forward copy never reads a byte it already overwrote.
            forward(dest, src, n);
        } else {
            backward(dest, src, n);
        }
    }
}

/// Moves `n <= 64` bytes, reading every source byte before writing any: correct for any overlap.
#[inline(always)]
unsafe fn short_move(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: each access lies within [0, n) of its buffer (pieces overlap in the middle when n is
    // not their sum), which the caller makes readable (src) and writable (dest).
    unsafe {
        if n >= 16 {
            if n > 32 {
                let (a, b) = (load(src), load(src.add(16)));
                let (c, d) = (load(src.add(n - 32)), load(src.add(n - 16)));
                store(dest, a);
                store(dest.add(16), b);
                store(dest.add(n - 32), c);
                store(dest.add(n - 16), d);
            } else {
                let (a, b) = (load(src), load(src.add(n - 16)));
                store(dest, a);
                store(dest.add(n - 16), b);
            }
        } else if n >= 8 {
            let (a, b) = (read_unaligned(src.cast::<u64>()), read_unaligned(src.add(n - 8).cast::<u64>()));
            write_unaligned(dest.cast::<u64>(), a);
            write_unaligned(dest.add(n - 8).cast::<u64>(), b);
        } else if n >= 4 {
            let (a, b) = (read_unaligned(src.cast::<u32>()), read_unaligned(src.add(n - 4).cast::<u32>()));
            write_unaligned(dest.cast::<u32>(), a);
            write_unaligned(dest.add(n - 4).cast::<u32>(), b);
        } else if n >= 2 {
            let (a, b) = (read_unaligned(src.cast::<u16>()), read_unaligned(src.add(n - 2).cast::<u16>()));
            write_unaligned(dest.cast::<u16>(), a);
            write_unaligned(dest.add(n - 2).cast::<u16>(), b);
        } else if n == 1 {
            *dest = *src;
        }
    }
}

/// Copies `n > 64` bytes front to back, 64 at a time; the last 64 are read before anything is
/// written, so `dest` may overlap `src` from below.
#[inline(always)]
unsafe fn forward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: every block lies within [0, n) (i < n - 64 in the loop; the tail is [n - 64, n)).
    // Overlap with dest < src: a block is read before it is written, and what it overwrites of src
    // lies before the block, already read; the tail was read first.
    unsafe {
        let tail = load_block(src.add(n - BLOCK));
        let mut i = 0;
        while i < n - BLOCK {
            let block = load_block(src.add(i));
            store_block(dest.add(i), block);
            i += BLOCK;
        }
        store_block(dest.add(n - BLOCK), tail);
    }
}

/// Copies `n > 64` bytes back to front, 64 at a time; the first 64 are read before anything is
/// written, so `dest` may overlap `src` from above.
#[inline(always)]
unsafe fn backward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: every block lies within [0, n) (end > 64 in the loop; the head is [0, 64)). Overlap
    // with dest > src: a block is read before it is written, and what it overwrites of src lies
    // after the block, already read; the head was read first.
    unsafe {
        let head = load_block(src);
        let mut end = n;
        while end > BLOCK {
            end -= BLOCK;
            let block = load_block(src.add(end));
            store_block(dest.add(end), block);
        }
        store_block(dest, head);
    }
}

/// `rep movsb`: copies `n` bytes front to back.
#[inline(always)]
unsafe fn rep_movsb(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller makes the ranges valid and not overlapping; the direction flag is clear at
    // every function boundary (System V ABI), so the copy runs forward.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
}

/// Sets `n` bytes at `dest` to `byte`.
///
/// # Safety
/// `dest` writable for `n` bytes (as C's `memset`).
#[inline(always)]
pub unsafe fn fill(dest: *mut u8, byte: u8, n: usize) {
    // SAFETY: every store lies within [0, n) of dest, which the caller makes writable (pieces
    // overlap when n is not their sum); rep stosb writes exactly n bytes forward (the direction
    // flag is clear at function boundaries).
    unsafe {
        if n >= REP_THRESHOLD {
            asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") byte,
                options(nostack, preserves_flags));
        } else if n >= 16 {
            let v = _mm_set1_epi8(byte as i8);
            if n > BLOCK {
                let mut i = 0;
                while i < n - BLOCK {
                    store_block(dest.add(i), [v; 4]);
                    i += BLOCK;
                }
                store_block(dest.add(n - BLOCK), [v; 4]);
            } else if n > 32 {
                store(dest, v);
                store(dest.add(16), v);
                store(dest.add(n - 32), v);
                store(dest.add(n - 16), v);
            } else {
                store(dest, v);
                store(dest.add(n - 16), v);
            }
        } else if n >= 8 {
            let v = u64::from(byte) * 0x0101_0101_0101_0101;
            write_unaligned(dest.cast::<u64>(), v);
            write_unaligned(dest.add(n - 8).cast::<u64>(), v);
        } else if n >= 4 {
            let v = u32::from(byte) * 0x0101_0101;
            write_unaligned(dest.cast::<u32>(), v);
            write_unaligned(dest.add(n - 4).cast::<u32>(), v);
        } else if n >= 2 {
            let v = u16::from(byte) * 0x0101;
            write_unaligned(dest.cast::<u16>(), v);
            write_unaligned(dest.add(n - 2).cast::<u16>(), v);
        } else if n == 1 {
            *dest = byte;
        }
    }
}

/// Compares `n` bytes as unsigned bytes: negative, zero or positive as `a` sorts before, equal to or
/// after `b` (as C's `memcmp`).
///
/// # Safety
/// `a` and `b` readable for `n` bytes.
#[inline(always)]
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: every read lies within [0, n) of both buffers, which the caller makes readable.
    // Overlapping windows are sound for ordering: the part a later window shares with an earlier one
    // was equal, so its first difference is the buffers' first.
    unsafe {
        if n >= 16 {
            let mut i = 0;
            while i < n - 16 {
                if let Some(order) = compare16(a.add(i), b.add(i)) {
                    return order;
                }
                i += 16;
            }
            return compare16(a.add(n - 16), b.add(n - 16)).unwrap_or(0);
        }
        if n >= 8 {
            let first =
                order_of(u64::from_be(read_unaligned(a.cast::<u64>())), u64::from_be(read_unaligned(b.cast::<u64>())));
            if first != 0 {
                return first;
            }
            return order_of(
                u64::from_be(read_unaligned(a.add(n - 8).cast::<u64>())),
                u64::from_be(read_unaligned(b.add(n - 8).cast::<u64>())),
            );
        }
        if n >= 4 {
            let first =
                order_of(u32::from_be(read_unaligned(a.cast::<u32>())), u32::from_be(read_unaligned(b.cast::<u32>())));
            if first != 0 {
                return first;
            }
            return order_of(
                u32::from_be(read_unaligned(a.add(n - 4).cast::<u32>())),
                u32::from_be(read_unaligned(b.add(n - 4).cast::<u32>())),
            );
        }
        let mut i = 0;
        while i < n {
            let (x, y) = (*a.add(i), *b.add(i));
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        0
    }
}

/// The order of 16 bytes at `a` and `b`, unless they are equal.
#[inline(always)]
unsafe fn compare16(a: *const u8, b: *const u8) -> Option<i32> {
    // SAFETY: the caller makes both readable for 16 bytes; the first differing index is below 16.
    unsafe {
        let equal = _mm_movemask_epi8(_mm_cmpeq_epi8(load(a), load(b))) as u32;
        if equal == 0xFFFF {
            return None;
        }
        let first = (!equal).trailing_zeros() as usize;
        Some(i32::from(*a.add(first)) - i32::from(*b.add(first)))
    }
}

/// -1, 0 or 1 as `x` is below, equal to or above `y`.
#[inline(always)]
fn order_of<T: Ord>(x: T, y: T) -> i32 {
    match x.cmp(&y) {
        core::cmp::Ordering::Less => -1,
        core::cmp::Ordering::Equal => 0,
        core::cmp::Ordering::Greater => 1,
    }
}
