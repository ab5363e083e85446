//! Async calls: [`Instrumented`] wraps the future of an `async fn`.
//!
//! One call is one future: latency runs from its first poll to its completion, busy time
//! is the sum of its polls, CPU time and allocations are summed over its polls. Each poll
//! is a frame on the stack of whichever thread polls it, so calls made during a poll nest
//! under this call even when the future moves between threads. No guard is held across
//! `.await`: the frame opens and closes inside `poll`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::record::call::InFlightCall;
use crate::record::callsite::Callsite;
use crate::record::config;
use crate::record::recorder;

/// Where the call of an [`Instrumented`] future stands.
#[derive(Debug, Clone, Copy)]
enum CallState {
    NotStarted,
    /// Profiling was off at the first poll: this call is not recorded.
    Passthrough,
    Running(InFlightCall),
    Done,
}

/// A future whose polls are recorded as one call. `Send` when `F` is.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Instrumented<F> {
    inner: F,
    callsite: &'static Callsite,
    self_type: Option<fn() -> &'static str>,
    state: CallState,
}

impl<F: Future> Instrumented<F> {
    /// Wraps `fut` as a call of the function behind `cs`.
    pub fn new(cs: &'static Callsite, fut: F) -> Self {
        Self {
            inner: fut,
            callsite: cs,
            self_type: None,
            state: CallState::NotStarted,
        }
    }

    /// As [`Instrumented::new`], for a method: `self_type` names `Self`.
    pub fn new_in_impl(cs: &'static Callsite, self_type: fn() -> &'static str, fut: F) -> Self {
        Self {
            inner: fut,
            callsite: cs,
            self_type: Some(self_type),
            state: CallState::NotStarted,
        }
    }
}

/// Closes the poll frame even when the inner poll panics.
struct PollFrame<'a> {
    state: &'a mut CallState,
    /// The frame's index on the stack.
    index: usize,
    func: u32,
}

impl PollFrame<'_> {
    /// Closes the frame of the poll that completed the call, and records the call.
    #[inline(always)]
    fn complete(self) {
        match &*self.state {
            // Ready at its first poll: the call is that one frame, which is then a sync
            // call's in every figure (latency = busy = the frame's time), and is booked as
            // one, without making the in-flight record.
            CallState::NotStarted => recorder::pop_sync(self.index),
            CallState::Running(call) => recorder::pop_last_poll(self.index, call),
            CallState::Passthrough | CallState::Done => {}
        }
        *self.state = CallState::Done;
        std::mem::forget(self);
    }
}

impl Drop for PollFrame<'_> {
    /// A poll that returned `Pending` (or panicked): its frame closes, the call stays in
    /// flight.
    fn drop(&mut self) {
        match self.state {
            CallState::NotStarted => {
                let Some((out, place, start)) = recorder::pop_first_poll(self.index) else {
                    // The frame is gone (the thread's recorder torn down): not recorded.
                    *self.state = CallState::Passthrough;
                    return;
                };
                // From the frame's start, so the call's latency covers its busy time.
                let mut call = InFlightCall::new(self.func, place, start.unix_ns());
                call.add_poll(&out);
                *self.state = CallState::Running(call);
            }
            CallState::Running(call) => {
                if let Some(out) = recorder::pop_poll(self.index) {
                    call.add_poll(&out);
                }
            }
            CallState::Passthrough | CallState::Done => {}
        }
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`, and
        // `Instrumented` has no `Unpin` impl of its own nor a `Drop` that moves it.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let (func, index) = match this.state {
            CallState::Passthrough | CallState::Done => return inner.poll(cx),
            CallState::NotStarted => {
                if !config::is_enabled() {
                    this.state = CallState::Passthrough;
                    return inner.poll(cx);
                }
                let func = this.callsite.id(this.self_type);
                (func, recorder::push_first_poll(func))
            }
            CallState::Running(call) => (
                call.func,
                recorder::push_poll(call.func, Some(call.place.node), 0).map(|o| o.index),
            ),
        };
        let Some(index) = index else {
            return inner.poll(cx);
        };
        let frame = PollFrame {
            state: &mut this.state,
            index,
            func,
        };
        let result = inner.poll(cx);
        if result.is_ready() {
            frame.complete();
        } else {
            drop(frame);
        }
        result
    }
}

impl<F> Instrumented<F> {
    #[cold]
    #[inline(never)]
    fn finish_cancelled(&mut self) {
        if let CallState::Running(call) = &self.state {
            recorder::complete(call, recorder::now_ns(), true);
        }
        self.state = CallState::Done;
    }
}

impl<F> Drop for Instrumented<F> {
    #[inline]
    fn drop(&mut self) {
        // A future dropped before completion is a cancelled call: it still took time.
        if let CallState::Running(_) = self.state {
            self.finish_cancelled();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::record::callsite::CallsiteKind;

    fn spin(ms: u64) -> u64 {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(ms) {
            std::hint::black_box(0);
        }
        t.elapsed().as_nanos() as u64
    }

    /// Pending once, then ready.
    struct YieldOnce(bool);

    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                Poll::Pending
            }
        }
    }

    fn poll_until_ready<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    static READY: Callsite = Callsite::new(
        None,
        "ready_at_once",
        "future_unit",
        "future.rs",
        1,
        CallsiteKind::Async,
    );
    static CHILD: Callsite = Callsite::new(None, "ready_child", "future_unit", "future.rs", 2, CallsiteKind::Sync);
    static TWO_POLLS: Callsite = Callsite::new(None, "two_polls", "future_unit", "future.rs", 3, CallsiteKind::Async);
    static PANICS: Callsite = Callsite::new(
        None,
        "panics_at_first_poll",
        "future_unit",
        "future.rs",
        4,
        CallsiteKind::Async,
    );

    /// A call whose first poll panics is booked once, as cancelled, with the time of that
    /// poll, and leaves no frame open.
    #[test]
    fn call_that_panics_in_its_first_poll_is_booked_as_cancelled() {
        let depth = crate::record::current_depth();
        let around = Instant::now();
        let r = std::panic::catch_unwind(|| {
            poll_until_ready(Instrumented::new(&PANICS, async {
                spin(2);
                // Unwinds without the panic hook (whose report can take longer than the
                // spin, and prints to the test's output).
                std::panic::resume_unwind(Box::new("boom in the first poll"));
            }))
        });
        let around = around.elapsed().as_nanos() as u64;
        assert!(r.is_err());
        assert_eq!(crate::record::current_depth(), depth, "the poll frame closed");
        let s = crate::snapshot();
        let f = s.function("future_unit::panics_at_first_poll").expect("recorded");
        assert_eq!((f.calls, f.cancelled), (1, 1));
        assert!(
            f.busy_ns >= 2_000_000 && f.busy_ns <= around,
            "busy {} ns, around {around} ns",
            f.busy_ns
        );
    }

    // Bounds: busy time covers the interval measured inside the call (its whole body) and
    // lies within the interval measured around it; self and total identities hold to the
    // nanosecond.
    #[test]
    fn call_ready_on_its_first_poll_is_booked_in_full() {
        CHILD.id(None);
        let around = Instant::now();
        let inside = poll_until_ready(Instrumented::new(&READY, async {
            let t = Instant::now();
            spin(2);
            let _g = crate::record::guard::enter(&CHILD);
            spin(2);
            t.elapsed().as_nanos() as u64
        }));
        let around = around.elapsed().as_nanos() as u64;
        let s = crate::snapshot();
        let f = s.function("future_unit::ready_at_once").expect("recorded");
        let c = s.function("future_unit::ready_child").expect("child recorded");
        assert_eq!((f.calls, f.cancelled, c.calls), (1, 0, 1));
        assert!(
            f.busy_ns >= inside && f.busy_ns <= around,
            "busy {} ns, body {inside} ns, around the call {around} ns",
            f.busy_ns
        );
        assert!(
            f.total_wall_ns >= f.busy_ns,
            "latency {} < busy {}",
            f.total_wall_ns,
            f.busy_ns
        );
        assert_eq!(f.total_wall_ns, f.self_wall_ns + c.total_wall_ns);
        assert_eq!(crate::record::current_depth(), 0);
    }

    #[test]
    fn call_ready_on_a_later_poll_sums_its_polls() {
        let (a, b) = poll_until_ready(Instrumented::new(&TWO_POLLS, async {
            let a = spin(2);
            YieldOnce(false).await;
            (a, spin(2))
        }));
        let s = crate::snapshot();
        let f = s.function("future_unit::two_polls").expect("recorded");
        assert_eq!(f.calls, 1);
        assert!(f.busy_ns >= a + b, "busy {} ns, polls of {a} and {b} ns", f.busy_ns);
        assert!(
            f.total_wall_ns >= f.busy_ns,
            "latency {} < busy {}",
            f.total_wall_ns,
            f.busy_ns
        );
        assert_eq!(f.total_wall_ns, f.self_wall_ns);
        assert_eq!(crate::record::current_depth(), 0);
    }
}
