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

use crate::record::call::{InFlightCall, Locator};
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
    idx: usize,
    state: &'a mut CallState,
}

impl Drop for PollFrame<'_> {
    fn drop(&mut self) {
        let out = recorder::pop_poll(Locator::Index(self.idx));
        if let (Some(out), CallState::Running(call)) = (out, &mut *self.state) {
            call.add_poll(&out);
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
        let (func, node) = match this.state {
            CallState::Passthrough | CallState::Done => return inner.poll(cx),
            CallState::NotStarted => {
                if !config::is_enabled() {
                    this.state = CallState::Passthrough;
                    return inner.poll(cx);
                }
                (this.callsite.id(this.self_type), None)
            }
            CallState::Running(call) => (call.func, Some(call.place.node)),
        };
        let first_poll = match this.state {
            CallState::NotStarted => recorder::now_ns(),
            _ => 0,
        };
        let Some(opened) = recorder::push_poll(func, node, 0) else {
            return inner.poll(cx);
        };
        if let CallState::NotStarted = this.state {
            this.state = CallState::Running(InFlightCall::new(func, opened.place, first_poll));
        }
        let result = {
            let _frame = PollFrame {
                idx: opened.index,
                state: &mut this.state,
            };
            inner.poll(cx)
        };
        if result.is_ready() {
            this.finish(false);
        }
        result
    }
}

impl<F> Instrumented<F> {
    fn finish(&mut self, cancelled: bool) {
        if let CallState::Running(call) = &self.state {
            recorder::complete(call, recorder::now_ns(), cancelled);
        }
        self.state = CallState::Done;
    }
}

impl<F> Drop for Instrumented<F> {
    fn drop(&mut self) {
        // A future dropped before completion is a cancelled call: it still took time.
        self.finish(true);
    }
}
