//! Synchronous calls: the guard that `#[profiled]` puts at the top of a function body.

use std::marker::PhantomData;

use crate::record::callsite::Callsite;
use crate::record::config;
use crate::record::recorder;

/// Records one synchronous call when dropped (also during a panic's unwinding).
///
/// `!Send`: it refers to its thread's frame stack.
#[derive(Debug)]
#[must_use = "the call is recorded when the guard drops"]
pub struct SyncGuard {
    idx: usize,
    _not_send: PhantomData<*const ()>,
}

/// Opens a frame for a call of the function behind `cs`. `None` when profiling is off.
#[inline(always)]
pub fn enter(cs: &'static Callsite) -> Option<SyncGuard> {
    if !config::is_enabled() {
        return None;
    }
    enter_slow(cs, None)
}

/// As [`enter`], for a method: `self_type` names `Self` (called once, to build the name).
#[inline(always)]
pub fn enter_in_impl(cs: &'static Callsite, self_type: fn() -> &'static str) -> Option<SyncGuard> {
    if !config::is_enabled() {
        return None;
    }
    enter_slow(cs, Some(self_type))
}

#[inline(always)]
fn enter_slow(cs: &'static Callsite, self_type: Option<fn() -> &'static str>) -> Option<SyncGuard> {
    let func = cs.id(self_type);
    let idx = recorder::push_sync(func)?;
    Some(SyncGuard {
        idx,
        _not_send: PhantomData,
    })
}

impl Drop for SyncGuard {
    #[inline(always)]
    fn drop(&mut self) {
        recorder::pop_sync(self.idx);
    }
}
