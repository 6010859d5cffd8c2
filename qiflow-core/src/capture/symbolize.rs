//! Resolving panic stack traces on qiflow's worker, with a bounded cost, keeping nothing of the
//! debug info afterwards.
//!
//! A resolution runs on a thread of its own (`qiflow-symbolize`) that exits when it is done. It
//! opens the object that holds qiflow's code (the executable, read through `/proc/self/exe`, so a
//! binary replaced on disk cannot give wrong names), looks up the addresses that are not in the
//! small address cache, and drops the loader (its memory map and everything it parsed). The
//! names it finds go into an [`Output`] that the worker allocated before the thread started, so
//! nothing the thread allocated outlives it. That matters with glibc's allocator: memory freed
//! by a thread stays resident behind any allocation of that thread that is still alive, and
//! only a thread that leaves nothing behind gives all of its memory back when it exits.
//!
//! What stays is the cache of resolved names: at most [`MAX_CACHED_ADDRESSES`] addresses, a few
//! tens of KiB, so the same panic again costs no lookup at all.
//!
//! The errors pipeline waits for a resolution at most [`RESOLVE_BUDGET`], then sends the report
//! with addresses only ([`Resolution::Unresolved`]). A resolution that overran still finishes;
//! the next report picks up its names. No second one starts while one runs, so at most one set
//! of debug info is ever loaded.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::stacktrace::{Frame, MAX_NAME_LEN, Resolution, Stacktrace};

/// The longest the errors pipeline waits for one resolution before it sends the report with
/// addresses only.
pub const RESOLVE_BUDGET: Duration = Duration::from_secs(5);

/// The most addresses whose resolved frames are kept between reports; when full, the cache is
/// emptied and fills again.
pub const MAX_CACHED_ADDRESSES: usize = 512;

/// The most frames (inlined calls included) one address resolves to; deeper inlining keeps the
/// innermost.
const MAX_FRAMES_PER_ADDRESS: usize = 8;

/// What resolves addresses into an [`Output`]: the real lookup, or a test's stand-in.
type ResolveFn = dyn Fn(&[u64], &mut Output) + Send + Sync;

thread_local! {
    /// Set on the thread that is resolving, so that a panic there is reported without a stack
    /// trace, instead of asking for another resolution.
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is resolving a stack trace (see `RESOLVING`).
pub(crate) fn resolving_here() -> bool {
    RESOLVING.with(Cell::get)
}

/// One resolved frame in an [`Output`]: ranges into its text.
#[derive(Debug, Clone)]
struct RawFrame {
    address: u64,
    function: Option<Range<usize>>,
    file: Option<Range<usize>>,
    line: Option<u32>,
    column: Option<u32>,
}

/// The result of a resolution, in memory allocated up front by the thread that asked for it:
/// the resolving thread only writes within the capacity it was given (what does not fit is left
/// out), so none of its own allocations survives it.
#[derive(Debug)]
pub(crate) struct Output {
    text: String,
    frames: Vec<RawFrame>,
}

impl Output {
    /// Room for `addresses` addresses, each with up to [`MAX_FRAMES_PER_ADDRESS`] frames whose
    /// names take 160 bytes on average (each is capped at [`MAX_NAME_LEN`]).
    fn for_addresses(addresses: usize) -> Self {
        let frames = addresses * MAX_FRAMES_PER_ADDRESS;
        Self {
            text: String::with_capacity(frames * 160),
            frames: Vec::with_capacity(frames),
        }
    }

    /// Copies `s`, cut to [`MAX_NAME_LEN`] (ending with `…` when cut); `None` when the text is
    /// full.
    fn push_str(&mut self, s: &str) -> Option<Range<usize>> {
        let (kept, cut) = crate::logging::format_cap(s, MAX_NAME_LEN);
        let (kept, marker) = if cut == 0 {
            (kept, "")
        } else {
            let (kept, _) = crate::logging::format_cap(kept, MAX_NAME_LEN - '…'.len_utf8());
            (kept, "…")
        };
        let start = self.text.len();
        if start + kept.len() + marker.len() > self.text.capacity() {
            return None;
        }
        self.text.push_str(kept);
        self.text.push_str(marker);
        Some(start..self.text.len())
    }

    /// Adds a frame of `address`, innermost first; `false` (and nothing added) when the output
    /// is full.
    pub(crate) fn add(
        &mut self,
        address: u64,
        function: Option<&str>,
        location: Option<(&str, Option<u32>, Option<u32>)>,
    ) -> bool {
        if self.frames.len() == self.frames.capacity() {
            return false;
        }
        let text_len = self.text.len();
        let function = match function.map(|f| self.push_str(f)) {
            Some(None) => return false,
            Some(Some(range)) => Some(range),
            None => None,
        };
        let (file, line, column) = match location {
            Some((file, line, column)) => match self.push_str(file) {
                Some(range) => (Some(range), line, column),
                None => {
                    self.text.truncate(text_len);
                    return false;
                }
            },
            None => (None, None, None),
        };
        self.frames.push(RawFrame {
            address,
            function,
            file,
            line,
            column,
        });
        true
    }

    /// Sets the function of the last frame of `address` when it has none; `false` when there
    /// is no such frame or no room.
    fn name_last(&mut self, address: u64, function: &str) -> bool {
        let Some(index) = self
            .frames
            .iter()
            .rposition(|f| f.address == address && f.function.is_none())
        else {
            return false;
        };
        let Some(range) = self.push_str(function) else {
            return false;
        };
        if let Some(frame) = self.frames.get_mut(index) {
            frame.function = Some(range);
        }
        true
    }

    /// The frames by address, built on the calling thread.
    fn into_frames(self) -> HashMap<u64, Vec<Frame>> {
        let text =
            |range: &Option<Range<usize>>| range.as_ref().and_then(|r| self.text.get(r.clone()));
        let mut by_address: HashMap<u64, Vec<Frame>> = HashMap::new();
        for raw in &self.frames {
            let mut frame = Frame::at(raw.address);
            if let Some(function) = text(&raw.function) {
                frame = frame.with_function(function);
            }
            if let Some(file) = text(&raw.file) {
                frame = frame.with_location(file, raw.line, raw.column);
            }
            by_address.entry(raw.address).or_default().push(frame);
        }
        by_address
    }
}

/// The addresses a resolution was asked for, and what it found.
type Late = (Vec<u64>, Output);

/// Resolves the stack traces of reports, one report at a time, on the errors pipeline's sink.
pub(crate) struct Symbolizer {
    cache: Mutex<HashMap<u64, Vec<Frame>>>,
    running: Arc<AtomicBool>,
    /// The output of a resolution that finished after its report had gone, for the next one.
    late: Arc<Mutex<Option<Late>>>,
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
        resolve: impl Fn(&[u64], &mut Output) + Send + Sync + 'static,
    ) -> Self {
        Self {
            cache: Mutex::new(HashMap::new()),
            running: Arc::new(AtomicBool::new(false)),
            late: Arc::new(Mutex::new(None)),
            budget,
            resolve: Arc::new(resolve),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Frame>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts what a resolution found for `addresses` in the cache (an empty list for an address
    /// it could not resolve, so it is not asked for again).
    fn remember(&self, addresses: Vec<u64>, output: Output) {
        let mut found = output.into_frames();
        let mut cache = self.cache();
        if cache.len() + addresses.len() > MAX_CACHED_ADDRESSES {
            cache.clear();
        }
        for address in addresses {
            let frames = found.remove(&address).unwrap_or_default();
            cache.insert(address, frames);
        }
    }

    /// Resolves a pending stack trace in place, then trims it (see [`Stacktrace`]); leaves it
    /// [`Resolution::Unresolved`] when the budget runs out, a resolution is still running, or
    /// nothing could be named.
    pub(crate) async fn resolve(&self, trace: &mut Stacktrace) {
        if trace.resolution != Resolution::Pending {
            return;
        }
        let late = self
            .late
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((addresses, output)) = late {
            self.remember(addresses, output);
        }
        let mut missing: Vec<u64> = {
            let cache = self.cache();
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
        let cache = self.cache();
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

    /// Runs one resolution of `addresses` on a thread of its own and waits for it within the
    /// budget. `false` when it overran, failed, or another one was still running.
    async fn run(&self, addresses: Vec<u64>) -> bool {
        if self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        let running = Running(self.running.clone());
        // Allocated here, before the thread starts: see `Output`.
        let mut output = Output::for_addresses(addresses.len());
        let (sender, receiver) = tokio::sync::oneshot::channel::<Output>();
        let late = self.late.clone();
        let resolve = self.resolve.clone();
        let asked = addresses.clone();
        let spawned = std::thread::Builder::new()
            .name("qiflow-symbolize".into())
            .spawn(move || {
                RESOLVING.with(|r| r.set(true));
                resolve(&asked, &mut output);
                // Done before the answer, so that the next report may start a resolution.
                drop(running);
                if let Err(output) = sender.send(output) {
                    // The report went without names; the next one takes them.
                    *late.lock().unwrap_or_else(PoisonError::into_inner) = Some((asked, output));
                }
            });
        if spawned.is_err() {
            return false; // `running` was dropped with the closure.
        }
        match tokio::time::timeout(self.budget, receiver).await {
            Ok(Ok(output)) => {
                self.remember(addresses, output);
                true
            }
            _ => false,
        }
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
fn resolve_in_own_object(addresses: &[u64], output: &mut Output) {
    let Some(object) = OwnObject::find() else {
        return;
    };
    let Ok(loader) = addr2line::Loader::new(&object.path) else {
        return;
    };
    for &address in addresses {
        if let Some(probe) = object.probe(address) {
            add_frames(&loader, address, probe, output);
        }
    }
}

/// Adds the frames of one address to `output`: the inlined calls first, then the function
/// that holds them.
fn add_frames(loader: &addr2line::Loader, address: u64, probe: u64, output: &mut Output) {
    let mut added = 0;
    let mut outermost_named = false;
    if let Ok(mut frames) = loader.find_frames(probe) {
        while let Ok(Some(found)) = frames.next() {
            if added == MAX_FRAMES_PER_ADDRESS {
                break;
            }
            let name = found.function.as_ref().and_then(|f| f.demangle().ok());
            let location = found
                .location
                .as_ref()
                .and_then(|l| Some((l.file?, l.line, l.column)));
            if !output.add(address, name.as_deref(), location) {
                return;
            }
            added += 1;
            outermost_named = name.is_some();
        }
    }
    // Without debug info for the address (or with line tables only, for the outermost
    // function), the symbol table still names the function.
    if !outermost_named && let Some(symbol) = loader.find_symbol(probe) {
        let name = addr2line::demangle_auto(symbol.into(), None);
        if added == 0 || !output.name_last(address, &name) {
            output.add(address, Some(&name), None);
        }
    }
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
        let marker = resolve_in_own_object as fn(&[u64], &mut Output) as usize;
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
            ours.file
                .as_deref()
                .is_some_and(|f| f.ends_with("symbolize.rs")),
            "{ours:?}"
        );
        assert!(ours.line.is_some(), "{ours:?}");
        assert!(
            !trace.frames.iter().any(|f| f
                .function
                .as_deref()
                .is_some_and(|n| n.starts_with("backtrace::"))),
            "the capture's own frames are trimmed:\n{trace}"
        );
        assert!(trace.frames.len() <= crate::capture::MAX_FRAMES);
    }

    #[test]
    fn the_same_addresses_again_are_served_from_the_cache() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let symbolizer = Symbolizer::with_resolver(RESOLVE_BUDGET, move |addresses, output| {
            seen.lock().unwrap().push(addresses.to_vec());
            for &a in addresses {
                assert!(output.add(a, Some(&format!("app::f{a}")), None));
            }
        });
        let rt = runtime();
        let mut first = Stacktrace::from_addresses([1, 2, 2, 3]);
        rt.block_on(symbolizer.resolve(&mut first));
        let mut second = Stacktrace::from_addresses([3, 2, 4]);
        rt.block_on(symbolizer.resolve(&mut second));
        assert_eq!(*calls.lock().unwrap(), [vec![1, 2, 3], vec![4]]);
        assert_eq!(second.resolution, Resolution::Resolved);
        let names: Vec<_> = second
            .frames
            .iter()
            .map(|f| f.function.clone().unwrap())
            .collect();
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
        let symbolizer =
            Symbolizer::with_resolver(Duration::from_millis(50), move |addresses, output| {
                called.store(true, Ordering::SeqCst);
                // Stands for a huge binary: runs until the test lets it finish.
                let _ = wait.lock().unwrap().recv();
                for &a in addresses {
                    output.add(a, Some("app::slow"), None);
                }
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
        while symbolizer.late.lock().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the resolution never ended"
            );
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
        let symbolizer = Symbolizer::with_resolver(RESOLVE_BUDGET, move |addresses, _output| {
            seen.store(resolving_here(), Ordering::SeqCst);
            if addresses.contains(&13) {
                panic!("malformed debug info");
            }
        });
        let rt = runtime();
        let mut trace = Stacktrace::from_addresses([13]);
        rt.block_on(symbolizer.resolve(&mut trace));
        assert_eq!(trace.resolution, Resolution::Unresolved);
        let mut next = Stacktrace::from_addresses([14]);
        rt.block_on(symbolizer.resolve(&mut next));
        assert_eq!(
            next.frames,
            [Frame::at(14)],
            "unresolvable: the address stays"
        );
        assert_eq!(next.resolution, Resolution::Unresolved, "no name found");
        assert!(
            marked.load(Ordering::SeqCst),
            "the resolving thread is marked"
        );
        assert!(!resolving_here());
    }

    #[test]
    fn addresses_outside_qiflows_object_are_not_looked_up() {
        let mut output = Output::for_addresses(2);
        resolve_in_own_object(&[0, 8], &mut output);
        assert!(output.frames.is_empty(), "{output:?}");
    }

    #[test]
    fn an_output_never_grows_past_what_the_worker_allocated() {
        let mut output = Output::for_addresses(1);
        let (text, frames) = (output.text.capacity(), output.frames.capacity());
        let long = "n".repeat(1000);
        let mut added = 0;
        while output.add(1, Some(&long), Some((&long, Some(1), None))) {
            added += 1;
        }
        assert!(added > 0 && added <= MAX_FRAMES_PER_ADDRESS, "{added}");
        assert_eq!(
            output.text.capacity(),
            text,
            "no reallocation by the resolving thread"
        );
        assert_eq!(output.frames.capacity(), frames);
        let frames = output.into_frames().remove(&1).unwrap();
        assert_eq!(frames.len(), added);
        let name = frames[0].function.as_deref().unwrap();
        assert!(name.ends_with('…') && name.len() <= MAX_NAME_LEN, "{name}");
        assert_eq!(frames[0].line, Some(1));
    }
}
