//! Growing a list that lives under a lock without allocating or freeing while holding it.
//!
//! An allocator can itself wait (for an arena's lock, for the kernel's memory-map lock), and
//! every thread queued on a profiler lock would wait with it. So the lists behind the
//! profiler's few locks (the thread registry's, the histogram arena's free list) are grown
//! with a buffer allocated before taking the lock, and their old buffer is freed after
//! releasing it.

use std::ops::DerefMut;

/// Takes the lock with `lock` and returns its guard once the list `list` picks has room for
/// `room` more entries.
pub(crate) fn lock_with_room<G: DerefMut, T>(
    lock: impl Fn() -> G,
    list: impl Fn(&mut G::Target) -> &mut Vec<T>,
    room: usize,
) -> G {
    loop {
        let (len, capacity) = {
            let mut g = lock();
            let v = list(&mut g);
            if v.capacity() - v.len() >= room {
                return g;
            }
            (v.len(), v.capacity())
        };
        let mut bigger = Vec::with_capacity((len + room).max(capacity * 2).max(16));
        let unused = {
            let mut g = lock();
            let v = list(&mut g);
            if v.capacity() == capacity && bigger.capacity() - v.len() >= room {
                bigger.append(v);
                std::mem::replace(v, bigger)
            } else {
                bigger
            }
        };
        drop(unused);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn the_guard_comes_with_room_and_the_entries_kept() {
        let m = Mutex::new((0u8, vec![1, 2, 3]));
        let mut g = lock_with_room(|| m.lock().unwrap(), |t| &mut t.1, 100);
        assert!(g.1.capacity() - g.1.len() >= 100);
        let before = g.1.capacity();
        g.1.extend(0..100);
        assert_eq!(g.1.capacity(), before, "no growth under the lock");
        assert_eq!(&g.1[..4], &[1, 2, 3, 0]);
    }
}
