//! Stack traces of panics: raw return addresses taken on the panicking thread, turned into
//! function names and `file:line` later, on qiflow's worker (see the `symbolize` module).

use std::fmt;

use serde::Serialize;

/// The most return addresses the panic hook keeps. A handler on a tokio worker thread panics
/// about 100 frames deep; the frames past this limit are the runtime's outermost ones.
pub const MAX_CAPTURED_FRAMES: usize = 128;

/// The most frames a resolved stack trace keeps, innermost first (an inlined call is a frame of
/// its own).
pub const MAX_FRAMES: usize = 64;

/// The longest function name or file path a frame keeps, in bytes; a longer one is cut and
/// ends with `…`.
pub const MAX_NAME_LEN: usize = 256;

/// Where a stack trace is on its way from addresses to names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resolution {
    /// Addresses only, as taken on the panicking thread. qiflow's worker resolves them before the
    /// report is stored or forwarded.
    Pending,
    /// Resolved on the worker: each frame has its function and, where the binary has line
    /// tables, its file and line. A frame in another object (a shared library) keeps only its
    /// address.
    Resolved,
    /// Left as addresses: the resolution did not finish within its budget, another one was
    /// still running, or the binary has no symbols (stripped). Sentry can still resolve them from uploaded debug files (the event carries
    /// the addresses and the loaded objects' build ids).
    Unresolved,
}

/// One frame of a stack trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Frame {
    /// The return address (the instruction address for the innermost frame), as the process saw
    /// it. Serialized as a `0x…` hex string, as Sentry's native frames are.
    #[serde(serialize_with = "hex")]
    pub instruction_addr: u64,
    /// The function, demangled and without its hash (`quickstart::panic::{{closure}}`), once
    /// resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The source file, when the binary has line tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The column in `line`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl Frame {
    /// A frame known only by its address.
    pub fn at(instruction_addr: u64) -> Self {
        Self {
            instruction_addr,
            function: None,
            file: None,
            line: None,
            column: None,
        }
    }

    /// Sets the function name, cut to [`MAX_NAME_LEN`].
    #[must_use]
    pub fn with_function(mut self, function: &str) -> Self {
        self.function = Some(capped(function));
        self
    }

    /// Sets the source location; the file is cut to [`MAX_NAME_LEN`].
    #[must_use]
    pub fn with_location(mut self, file: &str, line: Option<u32>, column: Option<u32>) -> Self {
        self.file = Some(capped(file));
        self.line = line;
        self.column = column;
        self
    }
}

fn hex<S: serde::Serializer>(addr: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{addr:#x}"))
}

fn capped(s: &str) -> String {
    let (kept, cut) = crate::logging::format_cap(s, MAX_NAME_LEN);
    if cut == 0 {
        return kept.to_owned();
    }
    let (kept, _) = crate::logging::format_cap(kept, MAX_NAME_LEN - '…'.len_utf8());
    format!("{kept}…")
}

/// The stack of a panicking thread, innermost frame first.
///
/// The panic hook takes it with [`Stacktrace::capture`]: return addresses only, no symbol
/// lookup, so the panicking thread (a request's) pays for a stack walk and nothing else. qiflow's
/// worker resolves the addresses before the report reaches the [`ErrorStore`](super::ErrorStore)
/// and the reporters; see `docs/errors.md`, "Backtraces and memory".
///
/// ```
/// use qiflow_core::capture::{Resolution, Stacktrace};
///
/// let trace = Stacktrace::capture();
/// assert_eq!(trace.resolution, Resolution::Pending);
/// assert!(!trace.frames.is_empty());
/// assert!(trace.frames.iter().all(|f| f.function.is_none()), "addresses only");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stacktrace {
    /// The frames, innermost first.
    pub frames: Vec<Frame>,
    /// Whether the frames have names yet.
    pub resolution: Resolution,
    /// Frames past [`MAX_CAPTURED_FRAMES`] or [`MAX_FRAMES`] were left out (the outermost ones).
    pub truncated: bool,
}

impl Stacktrace {
    /// The current thread's stack as return addresses, at most [`MAX_CAPTURED_FRAMES`] of them.
    ///
    /// Walks the stack with the unwinder's tables and looks nothing up: no debug info is read,
    /// and the one allocation is the frame list. Concurrent captures take turns on the
    /// `backtrace` crate's lock for the length of a walk (microseconds); qiflow never holds that
    /// lock to resolve symbols.
    pub fn capture() -> Self {
        let mut addresses = [0u64; MAX_CAPTURED_FRAMES];
        let mut len = 0;
        let mut truncated = false;
        backtrace::trace(|frame| {
            let ip = frame.ip() as usize as u64;
            if ip == 0 {
                return false; // The end of the stack.
            }
            let Some(slot) = addresses.get_mut(len) else {
                truncated = true;
                return false;
            };
            *slot = ip;
            len += 1;
            true
        });
        let mut trace = Self::from_addresses(addresses.iter().take(len).copied());
        trace.truncated = truncated;
        trace
    }

    /// A pending stack trace of `addresses`, innermost first (at most [`MAX_CAPTURED_FRAMES`]
    /// are kept).
    pub fn from_addresses(addresses: impl IntoIterator<Item = u64>) -> Self {
        let mut addresses = addresses.into_iter();
        let frames: Vec<Frame> = addresses
            .by_ref()
            .take(MAX_CAPTURED_FRAMES)
            .map(Frame::at)
            .collect();
        Self {
            frames,
            resolution: Resolution::Pending,
            truncated: addresses.next().is_some(),
        }
    }

    /// Drops the frames of the panic machinery (the unwinder, qiflow's hook, the standard
    /// library's panic entry points) above the frame that panicked and the thread's start-up
    /// below its entry point, as the standard library's short backtrace does, then keeps the
    /// innermost [`MAX_FRAMES`].
    pub(crate) fn trim(&mut self) {
        // Matched inside the name: the markers are generic (`__rust_begin_short_backtrace::<F, T>`).
        let named =
            |f: &Frame, marker: &str| f.function.as_deref().is_some_and(|n| n.contains(marker));
        if let Some(end) = self
            .frames
            .iter()
            .rposition(|f| named(f, "__rust_end_short_backtrace"))
        {
            self.frames.drain(..=end);
        } else {
            // The capture's own frames, through `Stacktrace::capture`: with line tables only
            // (`debug = "line-tables-only"`), the frames inlined into it have short names
            // (`trace`) that no prefix below matches.
            if let Some(end) = self
                .frames
                .iter()
                .position(|f| named(f, "qiflow_core::capture::stacktrace::Stacktrace::capture"))
            {
                self.frames.drain(..=end);
            }
            let machinery = self
                .frames
                .iter()
                .take_while(|f| {
                    f.function
                        .as_deref()
                        .is_none_or(|n| PANIC_MACHINERY.iter().any(|prefix| n.starts_with(prefix)))
                })
                .count();
            // Without any name (nothing resolved), there is nothing to tell machinery by.
            if machinery < self.frames.len() {
                self.frames.drain(..machinery);
            }
        }
        if let Some(begin) = self
            .frames
            .iter()
            .position(|f| named(f, "__rust_begin_short_backtrace"))
        {
            self.frames.truncate(begin);
        }
        if self.frames.len() > MAX_FRAMES {
            self.frames.truncate(MAX_FRAMES);
            self.truncated = true;
        }
    }
}

/// Names that start the frames above the one that panicked when the standard library's
/// `__rust_end_short_backtrace` marker is missing.
const PANIC_MACHINERY: &[&str] = &[
    "backtrace::",
    "qiflow_core::capture::panic::",
    "qiflow_core::capture::stacktrace::Stacktrace::capture",
    "std::panicking::",
    "std::panic::",
    "std::sys::backtrace::",
    "core::panicking::",
    "<alloc::boxed::Box<F,A> as core::ops::function::Fn<Args>>::call",
    "rust_begin_unwind",
    "__rustc::rust_begin_unwind",
    "_Unwind_",
];

impl fmt::Display for Stacktrace {
    /// The standard library's backtrace layout: `  N: function` then `at file:line:column`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, frame) in self.frames.iter().enumerate() {
            match &frame.function {
                Some(function) => writeln!(f, "{i:4}: {function}")?,
                None => writeln!(f, "{i:4}: {:#x}", frame.instruction_addr)?,
            }
            if let Some(file) = &frame.file {
                write!(f, "             at {file}")?;
                if let Some(line) = frame.line {
                    write!(f, ":{line}")?;
                    if let Some(column) = frame.column {
                        write!(f, ":{column}")?;
                    }
                }
                writeln!(f)?;
            }
        }
        if self.truncated {
            writeln!(f, "      (outer frames left out)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Frame {
        Frame::at(0x1000).with_function(name)
    }

    fn names(trace: &Stacktrace) -> Vec<&str> {
        trace
            .frames
            .iter()
            .map(|f| f.function.as_deref().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn a_capture_holds_addresses_only() {
        let trace = Stacktrace::capture();
        assert_eq!(trace.resolution, Resolution::Pending);
        assert!(trace.frames.len() > 3, "{trace:?}");
        assert!(trace.frames.iter().all(|f| f.instruction_addr != 0));
        assert!(
            trace
                .frames
                .iter()
                .all(|f| f.function.is_none() && f.file.is_none() && f.line.is_none()),
            "the panicking thread resolves nothing"
        );
    }

    #[test]
    fn a_deep_stack_is_cut_at_the_capture_limit() {
        fn recurse(depth: usize) -> Stacktrace {
            if depth == 0 {
                return Stacktrace::capture();
            }
            let trace = recurse(depth - 1);
            std::hint::black_box(trace)
        }
        let trace = recurse(MAX_CAPTURED_FRAMES + 50);
        assert_eq!(trace.frames.len(), MAX_CAPTURED_FRAMES);
        assert!(trace.truncated);

        let shallow = Stacktrace::from_addresses([1, 2, 3]);
        assert_eq!(shallow.frames.len(), 3);
        assert!(!shallow.truncated);
        let long = Stacktrace::from_addresses(0..1000);
        assert_eq!(long.frames.len(), MAX_CAPTURED_FRAMES);
        assert!(long.truncated);
    }

    #[test]
    fn trimming_keeps_the_frames_between_the_short_backtrace_markers() {
        let mut trace = Stacktrace::from_addresses([]);
        trace.frames = [
            "backtrace::backtrace::trace",
            "qiflow_core::capture::panic::report",
            "std::panicking::panic_with_hook",
            "std::sys::backtrace::__rust_end_short_backtrace",
            "__rustc::rust_begin_unwind",
            "core::panicking::panic_bounds_check",
            "quickstart::panic::{{closure}}",
            "tokio::runtime::task::harness::poll",
            "std::sys::backtrace::__rust_begin_short_backtrace::<F, T>",
            "std::thread::Builder::spawn_unchecked_::{{closure}}",
            "start_thread",
        ]
        .into_iter()
        .map(named)
        .collect();
        trace.trim();
        assert_eq!(
            names(&trace),
            [
                "__rustc::rust_begin_unwind",
                "core::panicking::panic_bounds_check",
                "quickstart::panic::{{closure}}",
                "tokio::runtime::task::harness::poll",
            ]
        );
        assert!(!trace.truncated);
    }

    #[test]
    fn without_markers_the_machinery_by_name_goes() {
        let mut trace = Stacktrace::from_addresses([]);
        trace.frames = vec![
            Frame::at(1),
            named("backtrace::backtrace::trace"),
            named("qiflow_core::capture::panic::report"),
            named("<alloc::boxed::Box<F,A> as core::ops::function::Fn<Args>>::call"),
            named("std::panicking::rust_panic_with_hook"),
            named("core::panicking::panic_fmt"),
            named("app::handler"),
            named("main"),
        ];
        trace.trim();
        assert_eq!(names(&trace), ["app::handler", "main"]);

        // Nothing resolved: nothing is dropped.
        let mut bare = Stacktrace::from_addresses([1, 2, 3]);
        bare.trim();
        assert_eq!(bare.frames.len(), 3);
    }

    #[test]
    fn trimming_caps_the_frame_count_and_names_are_capped() {
        let mut trace = Stacktrace::from_addresses([]);
        trace.frames = (0..200).map(|i| named(&format!("app::f{i}"))).collect();
        trace.trim();
        assert_eq!(trace.frames.len(), MAX_FRAMES);
        assert_eq!(trace.frames[0].function.as_deref(), Some("app::f0"));
        assert!(trace.truncated);

        let long = "x".repeat(1000);
        let frame = Frame::at(1)
            .with_function(&long)
            .with_location(&long, Some(3), None);
        let function = frame.function.unwrap();
        assert!(
            function.len() <= MAX_NAME_LEN && function.ends_with('…'),
            "{function}"
        );
        assert!(frame.file.unwrap().len() <= MAX_NAME_LEN);
    }

    #[test]
    fn it_serializes_hex_addresses_and_prints_like_std() {
        let mut trace = Stacktrace::from_addresses([0x55d0_c3a1_b2c3, 0x10]);
        trace.frames[0] = trace.frames[0]
            .clone()
            .with_function("app::handler")
            .with_location("src/main.rs", Some(97), Some(13));
        let json = serde_json::to_value(&trace).unwrap();
        assert_eq!(json["frames"][0]["instruction_addr"], "0x55d0c3a1b2c3");
        assert_eq!(json["frames"][0]["function"], "app::handler");
        assert_eq!(json["frames"][0]["line"], 97);
        assert!(json["frames"][1].get("function").is_none());
        assert_eq!(json["resolution"], "pending");
        assert_eq!(
            trace.to_string(),
            "   0: app::handler\n             at src/main.rs:97:13\n   1: 0x10\n"
        );
    }
}
