//! Boxing without the copy: [`boxed_in_place`].

use alloc::boxed::Box;
use core::mem::MaybeUninit;

/// `make()`'s value in a new box, written into the allocation directly.
///
/// `Box::new(make())` builds the value in a stack slot and then copies all `size_of::<T>()` bytes
/// into the allocation, even the ones no field of the value's current variant uses (a future just
/// made holds only its arguments, in a slot sized for its largest state). Here the allocation comes
/// first and `make()` is written through a `&mut` to it; that reference tells the compiler the
/// destination is private and large enough, so the value's fields are stored there as they are made.
pub fn boxed_in_place<T>(make: impl FnOnce() -> T) -> Box<T> {
    let mut slot = Box::<T>::new_uninit();
    write_into(&mut slot, make);
    // SAFETY: `write_into` initialized the slot (it returns only after `MaybeUninit::write`).
    unsafe { slot.assume_init() }
}

/// Not inlined: in a function of its own, the destination is a `noalias` parameter, which is what
/// lets the compiler build the value in it rather than copy it there afterwards.
#[inline(never)]
fn write_into<T>(slot: &mut MaybeUninit<T>, make: impl FnOnce() -> T) {
    slot.write(make());
}
