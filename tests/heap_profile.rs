//! jemalloc heap profiles: off gives an error that says how to switch it on; on (the test
//! re-runs itself with `_RJEM_MALLOC_CONF=prof:true,...`, which jemalloc reads at start-up)
//! the pprof protobuf decodes and names the function holding the memory, and the flamegraph
//! is an SVG; CPU sampling stays safe while heap profiling is on and threads allocate.

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use profiling_core::render::cpu_profile::{self, protos, protos::Message};
use profiling_core::render::heap_profile;
use profiling_core::Error;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator<profiling_core::Jemalloc> =
    profiling_core::ProfilingAllocator::jemalloc();

const CHILD_ENV: &str = "PROFILING_HEAP_TEST_CHILD";

#[test]
fn off_is_a_clear_error() {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        return; // the child run below
    }
    let e = heap_profile::heap_pprof().unwrap_err();
    assert!(matches!(e, Error::HeapProfilingUnavailable(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("opt.prof is false"), "{msg}");
    assert!(msg.contains("_RJEM_MALLOC_CONF=prof:true"), "{msg}");
    assert!(heap_profile::heap_flamegraph().is_err());
}

#[test]
fn on_serves_pprof_and_flamegraph() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_with_heap_profiling_on",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("_RJEM_MALLOC_CONF", "prof:true,prof_active:true,lg_prof_sample:12")
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

/// Keeps ~32 MiB alive in a distinctly named function.
#[inline(never)]
fn hold_heap_for_profile() -> Vec<Vec<u8>> {
    (0..32).map(|i| vec![i as u8; 1 << 20]).collect()
}

#[test]
#[ignore = "run by on_serves_pprof_and_flamegraph with heap profiling switched on"]
fn child_with_heap_profiling_on() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "run through on_serves_pprof_and_flamegraph"
    );
    let held = hold_heap_for_profile();
    heap_profile::check_available().unwrap();

    let gz = heap_profile::heap_pprof().unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    let p = protos::Profile::decode(raw.as_slice()).unwrap();
    let names: Vec<&str> = p
        .function
        .iter()
        .map(|f| p.string_table[f.name as usize].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("hold_heap_for_profile")),
        "heap profile does not name the holder: {names:?}"
    );
    let svg = String::from_utf8(heap_profile::heap_flamegraph().unwrap()).unwrap();
    assert!(svg.contains("<svg") && svg.contains("hold_heap_for_profile"));
    assert!(svg.contains("bytes"), "units in tooltips");

    // CPU sampling beside jemalloc with heap profiling on, while threads allocate and free.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                let end = std::time::Instant::now() + Duration::from_millis(800);
                let mut n = 0u64;
                while std::time::Instant::now() < end {
                    let v: Vec<Vec<u8>> = (0..16).map(|i| vec![0u8; 64 << (i % 8)]).collect();
                    n += v.len() as u64;
                }
                n
            })
        })
        .collect();
    let ((), cpu) = cpu_profile::profile_cpu_while(250, || std::thread::sleep(Duration::from_millis(900))).unwrap();
    let n: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(n > 1000, "workers stalled: {n}");
    assert!(cpu.samples() > 20, "{cpu:?}");
    drop(held);
}
