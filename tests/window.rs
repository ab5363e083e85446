//! Windows, reset and the run-time switch (process-global state: serialized).

use profiling_core::{profiled, reset, set_enabled, snapshot};
use profiling_integration::serial;

#[profiled]
fn windowed() {}

#[test]
fn reset_starts_a_new_window() {
    let _s = serial();
    for _ in 0..5 {
        windowed();
    }
    std::thread::spawn(windowed).join().unwrap();
    let before = snapshot();
    assert_eq!(before.function("window::windowed").unwrap().calls, 6);
    reset();
    for _ in 0..3 {
        windowed();
    }
    let after = snapshot();
    assert_eq!(after.window.epoch, before.window.epoch + 1);
    assert!(after.window.started_unix_ms >= before.window.started_unix_ms);
    assert_eq!(
        after.function("window::windowed").unwrap().calls,
        3,
        "earlier calls and exited threads' data are gone"
    );
}

#[profiled]
fn switched() {}

#[test]
fn disabled_at_run_time_records_nothing() {
    let _s = serial();
    set_enabled(false);
    for _ in 0..10 {
        switched();
    }
    set_enabled(true);
    switched();
    assert_eq!(snapshot().function("window::switched").unwrap().calls, 1);
}

#[test]
fn malformed_env_is_an_error_naming_the_variable() {
    let _s = serial();
    // SAFETY: serialized with every other test of this binary; no other thread reads the env.
    unsafe { std::env::set_var("ENABLE_PROFILING", "perhaps") };
    let err = profiling_core::init_from_env().unwrap_err();
    assert!(err.to_string().contains("ENABLE_PROFILING"), "{err}");
    unsafe { std::env::set_var("ENABLE_PROFILING", "false") };
    profiling_core::init_from_env().unwrap();
    assert!(!profiling_core::is_enabled());
    unsafe { std::env::remove_var("ENABLE_PROFILING") };
    set_enabled(true);
}

#[profiled]
fn on_excluded_thread() {}

#[test]
fn an_excluded_thread_never_shows_alive_or_exited() {
    let _s = serial();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let excluded = std::thread::spawn(move || {
        for _ in 0..5 {
            on_excluded_thread();
        }
        profiling_core::record::exclude_current_thread();
        on_excluded_thread();
        ready_tx.send(()).unwrap();
        done_rx.recv().unwrap();
    });
    ready_rx.recv().unwrap();
    on_excluded_thread(); // on this thread: counted
    assert_eq!(
        snapshot().function("window::on_excluded_thread").unwrap().calls,
        1,
        "while alive"
    );
    done_tx.send(()).unwrap();
    excluded.join().unwrap();
    assert_eq!(
        snapshot().function("window::on_excluded_thread").unwrap().calls,
        1,
        "after exit"
    );
}

#[profiled]
fn before_and_after_exclusion() {}

/// A thread that took an exited thread's kit (its tables hold that thread's figures, and its
/// node cache where they are) moves to tables of its own when excluded: its calls from then
/// on go there, not to the figures it inherited.
#[test]
fn an_excluded_thread_on_an_inherited_kit_records_nothing_after() {
    let _s = serial();
    const THREADS: usize = 40;
    // A burst of threads, each with a kit; they exit and give their kits back as used.
    let burst = |after: fn()| {
        let barrier = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    after();
                    barrier.wait();
                });
            }
        });
    };
    burst(before_and_after_exclusion);
    // More threads than clean kits are kept (`record/kits.rs`): some take the used ones.
    burst(|| {
        profiling_core::record::exclude_current_thread();
        before_and_after_exclusion();
    });
    assert_eq!(
        snapshot().function("window::before_and_after_exclusion").unwrap().calls,
        THREADS as u64,
        "only the first burst's calls count"
    );
}
