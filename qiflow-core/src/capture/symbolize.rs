//! Resolving panic stack traces on qiflow's worker, with a bounded cost, keeping nothing of the
//! debug info afterwards.
//!
//! A resolution opens the object that holds qiflow's code (the executable, read through
//! `/proc/self/exe` so a binary replaced on disk cannot give wrong names), looks up the
//! addresses that are not in the small address cache, and drops the loader (its memory map and
//! everything it parsed) before it returns. What stays is the cache of resolved names: at most
//! [`MAX_CACHED_ADDRESSES`] addresses, a few tens of KiB, so the same panic again costs no
//! lookup at all.
//!
//! The work runs on the worker runtime's blocking pool; the errors pipeline waits for it at most
//! [`RESOLVE_BUDGET`], then sends the report with addresses only ([`Resolution::Unresolved`]).
//! A resolution that overran still finishes in the background and fills the cache; no second
//! one starts while it runs, so at most one set of debug info is ever loaded.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::stacktrace::{Frame, Resolution, Stacktrace};

/// The longest the errors pipeline waits for one resolution before it sends the report with
/// addresses only.
pub const RESOLVE_BUDGET: Duration = Duration::from_secs(5);

/// The most addresses whose resolved frames are kept between reports; when full, the cache is
/// emptied and fills again.
pub const MAX_CACHED_ADDRESSES: usize = 512;

/// The frames of each address a resolution was asked for (innermost first, inlined calls
/// included); an empty list for an address it could not resolve.
pub(crate) type Resolved = HashMap<u64, Vec<Frame>>;

/// What resolves addresses: the real lookup, or a test's stand-in.
type ResolveFn = dyn Fn(&[u64]) -> Resolved + Send + Sync;

thread_local! {
    /// Set on the thread that is resolving, so that a panic there is reported without a stack
    /// trace, instead of asking for another resolution.
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is resolving a stack trace (see `RESOLVING`).
pub(crate) fn resolving_here() -> bool {
    RESOLVING.with(Cell::get)
}

/// Resolves the stack traces of reports, one report at a time, on the errors pipeline's sink.
pub(crate) struct Symbolizer {
    cache: Arc<Mutex<HashMap<u64, Vec<Frame>>>>,
    running: Arc<AtomicBool>,
    budget: Duration,
    resolve: Arc<ResolveFn>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::with_resolver(RESOLVE_BUDGET, resolve_in_own_object)
    }
}

/// Clears the `running` flag and the thread's `RESOLVING` mark when a resolution ends, even by a
/// panic.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        RESOLVING.with(|r| r.set(false));
        self.0.store(false, Ordering::Release);
    }
}

impl Symbolizer {
    /// A symbolizer that waits at most `budget` for `resolve`.
    pub(crate) fn with_resolver(
        budget: Duration,
        resolve: impl Fn(&[u64]) -> Resolved + Send + Sync + 'static,
    ) -> Self {
        Self {
            cache: Arc::new(Mutex::new(HashMap::new())),
            running: Arc::new(AtomicBool::new(false)),
            budget,
            resolve: Arc::new(resolve),
        }
    }

    /// Resolves a pending stack trace in place, then trims it (see [`Stacktrace`]); leaves it
    /// [`Resolution::Unresolved`] when the budget runs out or a resolution is still running.
    pub(crate) async fn resolve(&self, trace: &mut Stacktrace) {
        if trace.resolution != Resolution::Pending {
            return;
        }
        let mut missing: Vec<u64> = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            trace
                .frames
                .iter()
                .map(|f| f.instruction_addr)
                .filter(|a| !cache.contains_key(a))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() && !self.run(missing).await {
            trace.resolution = Resolution::Unresolved;
            return;
        }
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut frames = Vec::with_capacity(trace.frames.len());
        for frame in &trace.frames {
            match cache.get(&frame.instruction_addr) {
                Some(resolved) if !resolved.is_empty() => frames.extend(resolved.iter().cloned()),
                _ => frames.push(frame.clone()),
            }
        }
        drop(cache);
        if frames.iter().all(|f| f.function.is_none()) {
            // A stripped binary: nothing to show but the addresses.
            trace.resolution = Resolution::Unresolved;
            return;
        }
        trace.frames = frames;
        trace.resolution = Resolution::Resolved;
        trace.trim();
    }

    /// Runs one resolution of `addresses` on the blocking pool and waits for it within the
    /// budget. `false` when it overran, failed, or another one was still running.
    async fn run(&self, addresses: Vec<u64>) -> bool {
        if self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        let running = Running(self.running.clone());
        let cache = self.cache.clone();
        let resolve = self.resolve.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _running = running;
            RESOLVING.with(|r| r.set(true));
            let resolved = resolve(&addresses);
            let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() + addresses.len() > MAX_CACHED_ADDRESSES {
                cache.clear();
            }
            for address in addresses {
                let frames = resolved.get(&address).cloned().unwrap_or_default();
                cache.insert(address, frames);
            }
        });
        matches!(tokio::time::timeout(self.budget, job).await, Ok(Ok(())))
    }
}

/// Resolves the addresses that fall in the object holding qiflow's own code (the executable,
/// for a statically linked service), from its symbol table and, where present, its DWARF line
/// tables and inlining records. Addresses in other objects (libc, the dynamic loader) are left
/// unresolved: below a thread's entry point and above the panic they are trimmed anyway, and
/// Sentry can resolve them from the event's debug images.
///
/// Everything loaded (the memory map of the file, the parsed units and line programs, the
/// symbol map) is dropped before this returns.
fn resolve_in_own_object(addresses: &[u64]) -> Resolved {
    let mut resolved = Resolved::with_capacity(addresses.len());
    let Some(object) = OwnObject::find() else {
        return resolved;
    };
    let Ok(loader) = addr2line::Loader::new(&object.path) else {
        return resolved;
    };
    for &address in addresses {
        let Some(probe) = object.probe(address) else {
            continue;
        };
        resolved.insert(address, frames_at(&loader, address, probe));
    }
    resolved
}

/// The frames of one address: the inlined calls first, then the function that holds them.
fn frames_at(loader: &addr2line::Loader, address: u64, probe: u64) -> Vec<Frame> {
    let mut frames = Vec::new();
    if let Ok(mut iter) = loader.find_frames(probe) {
        while let Ok(Some(found)) = iter.next() {
            let mut frame = Frame::at(address);
            if let Some(name) = found.function.as_ref().and_then(|f| f.demangle().ok()) {
                frame = frame.with_function(&name);
            }
            if let Some(location) = &found.location
                && let Some(file) = location.file
            {
                frame = frame.with_location(file, location.line, location.column);
            }
            frames.push(frame);
        }
    }
    // Without debug info for the address (or with line tables only, for the outermost
    // function), the symbol table still names the function.
    let outermost_unnamed = frames.last().is_none_or(|f| f.function.is_none());
    if outermost_unnamed && let Some(symbol) = loader.find_symbol(probe) {
        let name = addr2line::demangle_auto(symbol.into(), None);
        match frames.last_mut() {
            Some(frame) => frame.function = Frame::at(address).with_function(&name).function,
            None => frames.push(Frame::at(address).with_function(&name)),
        }
    }
    frames
}

/// The object that holds qiflow's code, and where its code is mapped.
struct OwnObject {
    path: std::path::PathBuf,
    /// Runtime address minus the address stated in the file.
    bias: u64,
    /// The code segments, as runtime address ranges.
    code: Vec<std::ops::Range<u64>>,
}

impl OwnObject {
    fn find() -> Option<Self> {
        use findshlibs::{Segment as _, SharedLibrary as _, TargetSharedLibrary};
        // Any function of this crate: the object that holds it holds qiflow.
        let marker = resolve_in_own_object as fn(&[u64]) -> Resolved as usize;
        let mut found = None;
        let mut first = true;
        TargetSharedLibrary::each(|lib| {
            let is_main = std::mem::replace(&mut first, false);
            let code: Vec<std::ops::Range<u64>> = lib
                .segments()
                .filter(|s| s.is_code())
                .map(|s| {
                    let start = s.actual_virtual_memory_address(lib).0 as u64;
                    start..start + s.len() as u64
                })
                .collect();
            if !code.iter().any(|r| r.contains(&(marker as u64))) {
                return findshlibs::IterationControl::Continue;
            }
            // The first object is the executable: read it through /proc/self/exe, which is the
            // file that is running even when the path now names a newer build.
            let path = if is_main && cfg!(target_os = "linux") {
                std::path::PathBuf::from("/proc/self/exe")
            } else {
                std::path::PathBuf::from(lib.name())
            };
            found = Some(Self {
                path,
                bias: lib.virtual_memory_bias().0 as u64,
                code,
            });
            findshlibs::IterationControl::Break
        });
        found
    }

    /// The address to look up for a return address in this object: its stated address, one
    /// byte back into the call instruction (a return address points past the call, possibly
    /// into the next line or function).
    fn probe(&self, address: u64) -> Option<u64> {
        self.code
            .iter()
            .any(|r| r.contains(&address))
            .then(|| address.wrapping_sub(self.bias).saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[inline(never)]
    fn a_function_with_a_recognizable_name() -> Stacktrace {
        std::hint::black_box(Stacktrace::capture())
    }

    #[test]
    fn a_capture_resolves_to_function_names_and_lines_on_the_worker() {
        let mut trace = a_function_with_a_recognizable_name();
        assert!(trace.frames.iter().all(|f| f.function.is_none()));
        let symbolizer = Symbolizer::default();
        runtime().block_on(symbolizer.resolve(&mut trace));
        assert_eq!(trace.resolution, Resolution::Resolved, "{trace}");
        let ours = trace
            .frames
            .iter()
            .find(|f| {
                f.function
                    .as_deref()
                    .is_some_and(|n| n.ends_with("a_function_with_a_recognizable_name"))
            })
            .unwrap_or_else(|| panic!("no frame of the capturing function in:\n{trace}"));
        assert!(
            ours.file.as_deref().is_some_and(|f| f.ends_with("symbolize.rs")),
            "{ours:?}"
        );
        assert!(ours.line.is_some(), "{ours:?}");
        assert!(
            !trace
                .frames
                .iter()
                .any(|f| f.function.as_deref().is_some_and(|n| n.starts_with("backtrace::"))),
            "the capture's own frames are trimmed:\n{trace}"
        );
        assert!(trace.frames.len() <= crate::capture::MAX_FRAMES);
    }

    #[test]
    fn the_same_addresses_again_are_served_from_the_cache() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let symbolizer = Symbolizer::with_resolver(RESOLVE_BUDGET, move |addresses| {
            seen.lock().unwrap().push(addresses.to_vec());
            addresses
                .iter()
                .map(|&a| (a, vec![Frame::at(a).with_function(&format!("app::f{a}"))]))
                .collect()
        });
        let rt = runtime();
        let mut first = Stacktrace::from_addresses([1, 2, 2, 3]);
        rt.block_on(symbolizer.resolve(&mut first));
        let mut second = Stacktrace::from_addresses([3, 2, 4]);
        rt.block_on(symbolizer.resolve(&mut second));
        assert_eq!(*calls.lock().unwrap(), [vec![1, 2, 3], vec![4]]);
        assert_eq!(second.resolution, Resolution::Resolved);
        let names: Vec<_> = second.frames.iter().map(|f| f.function.clone().unwrap()).collect();
        assert_eq!(names, ["app::f3", "app::f2", "app::f4"]);

        // A full cache starts over rather than growing.
        for chunk in 0..6 {
            let start = 1000 + chunk * 120;
            let mut many = Stacktrace::from_addresses(start..start + 120);
            rt.block_on(symbolizer.resolve(&mut many));
            assert_eq!(many.resolution, Resolution::Resolved);
        }
        assert!(symbolizer.cache.lock().unwrap().len() <= MAX_CACHED_ADDRESSES);
    }

    #[test]
    fn a_resolution_past_its_budget_leaves_addresses_and_blocks_no_second_one() {
        let (release, wait) = mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let calls = Arc::new(AtomicBool::new(false));
        let called = calls.clone();
        let symbolizer = Symbolizer::with_resolver(Duration::from_millis(50), move |addresses| {
            called.store(true, Ordering::SeqCst);
            // Stands for a huge binary: runs until the test lets it finish.
            let _ = wait.lock().unwrap().recv();
            addresses
                .iter()
                .map(|&a| (a, vec![Frame::at(a).with_function("app::slow")]))
                .collect()
        });
        let rt = runtime();
        let mut trace = Stacktrace::from_addresses([7, 8]);
        rt.block_on(symbolizer.resolve(&mut trace));
        assert_eq!(trace.resolution, Resolution::Unresolved);
        assert_eq!(trace.frames, [Frame::at(7), Frame::at(8)], "addresses kept");
        assert!(calls.load(Ordering::SeqCst));

        // While it still runs, another report does not start a second resolution.
        let mut other = Stacktrace::from_addresses([9]);
        rt.block_on(symbolizer.resolve(&mut other));
        assert_eq!(other.resolution, Resolution::Unresolved);

        // Once it finishes, its result is in the cache for the next report.
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while symbolizer.running.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the resolution never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut again = Stacktrace::from_addresses([8]);
        rt.block_on(symbolizer.resolve(&mut again));
        assert_eq!(again.resolution, Resolution::Resolved);
        assert_eq!(again.frames[0].function.as_deref(), Some("app::slow"));
    }

    #[test]
    fn a_resolver_that_panics_leaves_addresses_and_the_next_one_runs() {
        let marked = Arc::new(AtomicBool::new(false));
        let seen = marked.clone();
        let symbolizer = Symbolizer::with_resolver(RESOLVE_BUDGET, move |addresses| {
            seen.store(resolving_here(), Ordering::SeqCst);
            if addresses.contains(&13) {
                panic!("malformed debug info");
            }
            Resolved::new()
        });
        let rt = runtime();
        let mut trace = Stacktrace::from_addresses([13]);
        rt.block_on(symbolizer.resolve(&mut trace));
        assert_eq!(trace.resolution, Resolution::Unresolved);
        let mut next = Stacktrace::from_addresses([14]);
        rt.block_on(symbolizer.resolve(&mut next));
        assert_eq!(next.frames, [Frame::at(14)], "unresolvable: the address stays");
        assert_eq!(next.resolution, Resolution::Unresolved, "no name found");
        assert!(
            marked.load(Ordering::SeqCst),
            "the resolving thread is marked"
        );
        assert!(!resolving_here());
    }

    #[test]
    fn addresses_outside_qiflows_object_are_not_looked_up() {
        let resolved = resolve_in_own_object(&[0, 8]);
        assert!(resolved.is_empty(), "{resolved:?}");
    }
}
