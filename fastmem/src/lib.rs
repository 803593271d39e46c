//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for the static musl build of `trellis-proxy`,
//! in place of musl's (`trellisd`, also static musl, does not link it yet).
//!
//! musl's x86_64 `memcpy` copies with `rep movsq` whatever the length, and its `memcmp` compares one
//! byte at a time. A request through the proxy makes about 140 copies (futures, `http` requests and
//! responses moved by value), most of 150 to 350 bytes, where `rep movsq`'s start-up cost is most of
//! the time; header names and values are compared with `memcmp`/`bcmp`. The routines here copy,
//! fill and compare 16 bytes at a time with SSE2 (part of every x86_64 CPU), in overlapping pieces so
//! a length needs no byte loop, and hand long copies and fills to `rep movsb`/`rep stosb`, which CPUs
//! with ERMS (Intel since 2012, AMD Zen) run at full speed.
//!
//! The C symbols are defined only for x86_64 musl targets (the [`c`] module), where a static link
//! then takes them instead of libc's: the linker only pulls objects out of `libc.a` for symbols still
//! undefined. Other targets (glibc's routines are already fast) get only the Rust functions, which the
//! tests check byte for byte against plain loops. The crate is `no_builtins`, so LLVM never turns its
//! loops back into calls to `memcpy`.
//!
//! [`boxed_in_place`] is the other half of the same cost: a value moved into a new box is built on
//! the stack and copied whole, which for the proxy's per-request futures (several KiB, of which only
//! the arguments are set when the future is made) was a 7.5 KiB `memcpy` per request. It builds the
//! value straight in the allocation.

#![cfg_attr(not(test), no_std)]
#![no_builtins]
// Raw memory access is this crate's whole purpose; every unsafe function states its contract and
// every block what makes it sound.
#![allow(unsafe_code)]

extern crate alloc;

mod boxed;
pub use boxed::boxed_in_place;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::{REP_THRESHOLD, compare, copy, fill, move_bytes};

/// The C symbols; a static musl link takes these instead of `libc.a`'s.
#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
pub mod c {
    /// C's `memcpy`: [`crate::copy`].
    ///
    /// # Safety
    /// As C's `memcpy`: `src` readable and `dest` writable for `n` bytes, the two not overlapping.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is copy's.
        unsafe { crate::copy(dest, src, n) };
        dest
    }

    /// C's `memmove`: [`crate::move_bytes`].
    ///
    /// # Safety
    /// As C's `memmove`: `src` readable and `dest` writable for `n` bytes; they may overlap.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is move_bytes'.
        unsafe { crate::move_bytes(dest, src, n) };
        dest
    }

    /// C's `memset`: [`crate::fill`] with the low byte of `c`.
    ///
    /// # Safety
    /// As C's `memset`: `dest` writable for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is fill's. C converts `c` to unsigned char: its low byte.
        unsafe { crate::fill(dest, c as u8, n) };
        dest
    }

    /// C's `memcmp`: [`crate::compare`].
    ///
    /// # Safety
    /// As C's `memcmp`: both readable for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's contract is compare's.
        unsafe { crate::compare(a, b, n) }
    }

    /// `bcmp`: zero when equal (LLVM calls it for `==` on byte slices).
    ///
    /// # Safety
    /// As `memcmp`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's contract is compare's.
        unsafe { crate::compare(a, b, n) }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
