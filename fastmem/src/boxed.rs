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

#[cfg(test)]
mod tests {
    use super::boxed_in_place;

    /// A large value whose variants use few of its bytes, as a future just made does.
    #[allow(clippy::large_enum_variant, reason = "the size difference is what is tested")]
    enum Large {
        Small(#[allow(dead_code, reason = "held for its drop")] std::rc::Rc<()>, u64),
        Full([u8; 8192]),
    }

    #[test]
    fn a_value_boxed_in_place_is_the_one_made_and_is_dropped_once() {
        let alive = std::rc::Rc::new(());
        let boxed = boxed_in_place(|| Large::Small(alive.clone(), 42));
        assert!(matches!(*boxed, Large::Small(_, 42)));
        assert_eq!(std::rc::Rc::strong_count(&alive), 2);
        drop(boxed);
        assert_eq!(std::rc::Rc::strong_count(&alive), 1, "dropping the box dropped the value");
        let full = boxed_in_place(|| Large::Full([7; 8192]));
        assert!(matches!(&*full, Large::Full(bytes) if bytes.iter().all(|b| *b == 7)));
    }

    #[test]
    fn a_future_boxed_in_place_runs_to_its_output() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let input = String::from("made");
        let mut future = Box::into_pin(boxed_in_place(|| async move {
            let padding = [1u8; 4096];
            std::future::ready(()).await;
            format!("{input} {}", padding.iter().map(|b| usize::from(*b)).sum::<usize>())
        }));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready("made 4096".to_owned()));
    }
}
