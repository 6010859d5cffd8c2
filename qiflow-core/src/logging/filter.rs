//! [`LogFilter`]: which events and spans get through, from `[logging] level` or `RUST_LOG`, and
//! changeable while the service runs ([`Observer::set_log_level`](crate::Observer::set_log_level),
//! `PUT /qiflow/api/loggers`).
//!
//! # When what happens
//!
//! - At build, the filter starts from `RUST_LOG` when it is set and not empty, else from
//!   `[logging] level`.
//! - A plain level (`"info"`) is kept in one atomic: checking a callsite is a load and a compare,
//!   and the filter keeps no per-span state, as tracing-subscriber's `LevelFilter`.
//! - Directives (`"info,sqlx=warn"`, `"warn,[request{route=/orders}]=debug"`) are handed to an
//!   `EnvFilter`, behind a read lock taken only while directives are in force.
//! - A change ([`LogFilter`] is changed through the observer) swaps the level or the `EnvFilter`,
//!   then rebuilds tracing's callsite cache, so every `debug!` that was disabled is asked again,
//!   and sets the `log` crate's maximum level to tracing's. Every clone of the filter, wherever
//!   it is installed, sees the change at once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};

/// The value of [`Shared::level`] while directives are in force.
const DIRECTIVES: u8 = u8::MAX;

/// What the filter lets through: a level, or `EnvFilter` directives.
///
/// Built by the observer; every clone shares one state, so a filter handed out by
/// [`Observer::log_filter`](crate::Observer::log_filter) and added to the host's own subscriber
/// changes with [`Observer::set_log_level`](crate::Observer::set_log_level) like the one `init`
/// installs. It works as a global filter (`registry().with(filter)`) and as a per-layer filter
/// (`layer.with_filter(filter)`).
#[derive(Clone)]
pub struct LogFilter {
    shared: Arc<Shared>,
}

struct Shared {
    /// The plain level in force (`0` off, `1` error … `5` trace), or [`DIRECTIVES`].
    level: AtomicU8,
    /// The directives in force when `level` is [`DIRECTIVES`]; `None` otherwise.
    directives: RwLock<Option<EnvFilter>>,
    /// The filter as text and where it came from; held while a change is made, so changes
    /// happen one at a time.
    current: Mutex<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    text: String,
    source: FilterSource,
}

/// Where the filter in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterSource {
    /// `[logging] level`.
    Config,
    /// The `RUST_LOG` environment variable.
    Env,
    /// [`Observer::set_log_level`](crate::Observer::set_log_level) or `PUT /qiflow/api/loggers`.
    Runtime,
}

impl FilterSource {
    /// How `GET /qiflow/api/loggers` names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Config => "logging.level",
            Self::Env => "RUST_LOG",
            Self::Runtime => "runtime",
        }
    }
}

/// A filter parsed and ready to apply.
pub(crate) enum Parsed {
    Level(LevelFilter),
    Directives(Box<EnvFilter>),
}

impl Parsed {
    /// The most verbose level the filter may let through anywhere.
    pub(crate) fn max_level(&self) -> LevelFilter {
        match self {
            Self::Level(level) => *level,
            Self::Directives(filter) => {
                EnvFilter::max_level_hint(filter).unwrap_or(LevelFilter::TRACE)
            }
        }
    }
}

/// A log filter that cannot be parsed: the filter, the directive at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    filter: String,
    directive: Option<String>,
    reason: String,
}

impl FilterError {
    /// The filter as given.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The directive that cannot be parsed (`None` when the filter is empty).
    pub fn directive(&self) -> Option<&str> {
        self.directive.as_deref()
    }
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.directive {
            Some(directive) => write!(
                f,
                "invalid log filter {:?}: the directive {directive:?} {}; use a level like \
                 \"info\" or directives like \"info,sqlx=warn\"",
                self.filter, self.reason
            ),
            None => write!(
                f,
                "the log filter is empty; use a level like \"info\" or directives like \
                 \"info,sqlx=warn\" (\"off\" turns logging off)"
            ),
        }
    }
}

impl std::error::Error for FilterError {}

/// Parses `text`: a plain level, or `EnvFilter` directives (each checked alone, so the error
/// names the one at fault).
pub(crate) fn parse(text: &str) -> Result<Parsed, FilterError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(FilterError {
            filter: text.to_owned(),
            directive: None,
            reason: String::new(),
        });
    }
    if let Ok(level) = trimmed.parse::<LevelFilter>() {
        return Ok(Parsed::Level(level));
    }
    // EnvFilter splits on commas too; empty pieces are skipped there as here.
    for piece in trimmed.split(',').filter(|p| !p.is_empty()) {
        if let Err(e) = piece.parse::<tracing_subscriber::filter::Directive>() {
            return Err(FilterError {
                filter: text.to_owned(),
                directive: Some(piece.to_owned()),
                reason: format!("is not valid ({e})"),
            });
        }
    }
    EnvFilter::try_new(trimmed)
        .map(|filter| Parsed::Directives(Box::new(filter)))
        .map_err(|e| FilterError {
            filter: text.to_owned(),
            directive: Some(trimmed.to_owned()),
            reason: format!("is not valid ({e})"),
        })
}

/// `level` as stored in [`Shared::level`].
fn code(level: LevelFilter) -> u8 {
    match level.into_level() {
        None => 0,
        Some(tracing::Level::ERROR) => 1,
        Some(tracing::Level::WARN) => 2,
        Some(tracing::Level::INFO) => 3,
        Some(tracing::Level::DEBUG) => 4,
        Some(tracing::Level::TRACE) => 5,
    }
}

/// The code of an event's or span's level: it passes a plain level whose code is at least this.
fn level_code(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        tracing::Level::DEBUG => 4,
        tracing::Level::TRACE => 5,
    }
}

/// The level of a [`Shared::level`] code other than [`DIRECTIVES`].
fn from_code(code: u8) -> LevelFilter {
    match code {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

impl LogFilter {
    /// A filter in force from the start: `parsed`, whose text is `text`, from `source`.
    pub(crate) fn new(text: &str, parsed: Parsed, source: FilterSource) -> Self {
        let (level, directives) = match parsed {
            Parsed::Level(level) => (code(level), None),
            Parsed::Directives(filter) => (DIRECTIVES, Some(*filter)),
        };
        Self {
            shared: Arc::new(Shared {
                level: AtomicU8::new(level),
                directives: RwLock::new(directives),
                current: Mutex::new(Current {
                    text: text.trim().to_owned(),
                    source,
                }),
            }),
        }
    }

    /// The filter in force, as text (`"info"`, `"info,sqlx=warn"`).
    pub fn current(&self) -> String {
        self.lock().text.clone()
    }

    /// The filter in force and where it came from.
    pub(crate) fn current_with_source(&self) -> (String, FilterSource) {
        let current = self.lock();
        (current.text.clone(), current.source)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `text` in force and returns the filter it replaces and where that came from; on an
    /// error nothing changes.
    pub(crate) fn set(&self, text: &str) -> Result<(String, FilterSource), FilterError> {
        let parsed = parse(text)?;
        let mut current = self.lock();
        self.apply(parsed);
        let previous = std::mem::replace(
            &mut *current,
            Current {
                text: text.trim().to_owned(),
                source: FilterSource::Runtime,
            },
        );
        // Still holding `current`: changes stay in order. The cache rebuild asks this filter
        // through `register_callsite`, which takes only the directives' read lock.
        rebuild();
        Ok((previous.text, previous.source))
    }

    /// Puts `to` (from `source`) back in force if `from` is still the filter in force: an undo
    /// that does not clobber a change made since. Returns whether it did.
    pub(crate) fn restore(&self, from: &str, to: &str, source: FilterSource) -> bool {
        let Ok(parsed) = parse(to) else {
            return false;
        };
        let mut current = self.lock();
        if current.text != from.trim() {
            return false;
        }
        self.apply(parsed);
        *current = Current {
            text: to.trim().to_owned(),
            source,
        };
        rebuild();
        true
    }

    /// Swaps the filter in force. Directives are stored before the mode says so, and a level is
    /// stored before the directives go, so a reader that saw the mode finds what it names or
    /// falls back to the level.
    fn apply(&self, parsed: Parsed) {
        let shared = &self.shared;
        match parsed {
            Parsed::Level(level) => {
                shared.level.store(code(level), Ordering::Release);
                *shared
                    .directives
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = None;
            }
            Parsed::Directives(filter) => {
                *shared
                    .directives
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(*filter);
                shared.level.store(DIRECTIVES, Ordering::Release);
            }
        }
    }

    /// Runs `f` on the directives when they are in force; `Err(level)` with the plain level
    /// otherwise.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&EnvFilter) -> R) -> Result<R, LevelFilter> {
        let level = self.shared.level.load(Ordering::Acquire);
        if level != DIRECTIVES {
            return Err(from_code(level));
        }
        let directives = self
            .shared
            .directives
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match directives.as_ref() {
            Some(filter) => Ok(f(filter)),
            // Changed to a level meanwhile.
            None => Err(from_code(self.shared.level.load(Ordering::Acquire))),
        }
    }

    /// Whether a plain level in force lets `metadata` through; `None` while directives are.
    #[inline]
    fn level_allows(&self, metadata: &Metadata<'_>) -> Option<bool> {
        let level = self.shared.level.load(Ordering::Relaxed);
        (level != DIRECTIVES).then(|| level >= level_code(metadata.level()))
    }

    fn interest(&self, metadata: &'static Metadata<'static>) -> Interest {
        match self.with(|f| <EnvFilter as Layer<NoSubscriber>>::register_callsite(f, metadata)) {
            Ok(interest) => interest,
            Err(level) if level >= *metadata.level() => Interest::always(),
            Err(_) => Interest::never(),
        }
    }

    fn hint(&self) -> Option<LevelFilter> {
        match self.with(EnvFilter::max_level_hint) {
            Ok(hint) => hint,
            Err(level) => Some(level),
        }
    }
}

impl std::fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFilter")
            .field("filter", &self.current())
            .finish()
    }
}

/// Rebuilds tracing's callsite cache and the `log` crate's maximum level after a change (what
/// tracing-subscriber's `reload::Handle` does).
fn rebuild() {
    tracing::callsite::rebuild_interest_cache();
    tracing_log::log::set_max_level(tracing_log::AsLog::as_log(&LevelFilter::current()));
}

/// The subscriber type `EnvFilter::register_callsite` is named with: the method does not use it.
type NoSubscriber = tracing_subscriber::Registry;

impl<S: Subscriber> Layer<S> for LogFilter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.interest(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.hint()
    }

    #[inline]
    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        match self.level_allows(metadata) {
            Some(allowed) => allowed,
            None => self
                .with(|f| f.enabled(metadata, ctx))
                .unwrap_or_else(|level| level >= *metadata.level()),
        }
    }

    #[inline]
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if self.level_allows(attrs.metadata()).is_none() {
            let _ = self.with(|f| f.on_new_span(attrs, id, ctx));
        }
    }

    #[inline]
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_record(id, values, ctx));
    }

    #[inline]
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_enter(id, ctx));
    }

    #[inline]
    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_exit(id, ctx));
    }

    #[inline]
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_close(id, ctx));
    }
}

impl<S> Filter<S> for LogFilter {
    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.interest(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.hint()
    }

    #[inline]
    fn enabled(&self, metadata: &Metadata<'_>, ctx: &Context<'_, S>) -> bool {
        match self.level_allows(metadata) {
            Some(allowed) => allowed,
            None => self
                .with(|f| f.enabled(metadata, ctx.clone()))
                .unwrap_or_else(|level| level >= *metadata.level()),
        }
    }

    #[inline]
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if self.level_allows(attrs.metadata()).is_none() {
            let _ = self.with(|f| f.on_new_span(attrs, id, ctx));
        }
    }

    #[inline]
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_record(id, values, ctx));
    }

    #[inline]
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_enter(id, ctx));
    }

    #[inline]
    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_exit(id, ctx));
    }

    #[inline]
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let _ = self.with(|f| f.on_close(id, ctx));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::AtomicUsize;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn filter(text: &str) -> LogFilter {
        LogFilter::new(text, parse(text).unwrap(), FilterSource::Config)
    }

    /// Counts the events that reach it.
    #[derive(Clone, Default)]
    struct Count(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn take(&self) -> usize {
            self.0.swap(0, Ordering::SeqCst)
        }
    }

    #[test]
    fn plain_levels_and_directives_parse_and_errors_name_the_directive() {
        assert!(matches!(
            parse("info"),
            Ok(Parsed::Level(LevelFilter::INFO))
        ));
        assert!(matches!(
            parse(" DEBUG "),
            Ok(Parsed::Level(LevelFilter::DEBUG))
        ));
        assert!(matches!(parse("off"), Ok(Parsed::Level(LevelFilter::OFF))));
        assert!(matches!(parse("info,sqlx=warn"), Ok(Parsed::Directives(_))));
        assert!(matches!(
            parse("my_app::db=trace"),
            Ok(Parsed::Directives(_))
        ));
        assert_eq!(
            parse("info,sqlx=warn").unwrap().max_level(),
            LevelFilter::INFO
        );
        assert_eq!(
            parse("warn,a=trace").unwrap().max_level(),
            LevelFilter::TRACE
        );

        let e = parse("info,sqlx=loud").err().unwrap();
        assert_eq!(e.directive(), Some("sqlx=loud"));
        assert_eq!(e.filter(), "info,sqlx=loud");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "invalid log filter \"info,sqlx=loud\": the directive \"sqlx=loud\" is not valid ("
            ),
            "{text}"
        );
        assert!(
            text.ends_with("directives like \"info,sqlx=warn\""),
            "{text}"
        );
        let e = parse("info,[unclosed=debug").err().unwrap();
        assert_eq!(e.directive(), Some("[unclosed=debug"));
        let e = parse(" ").err().unwrap();
        assert_eq!(e.directive(), None);
        assert!(e.to_string().starts_with("the log filter is empty;"), "{e}");
    }

    #[test]
    fn a_change_takes_effect_at_once_in_every_clone() {
        let filter = filter("info");
        let (global, per_layer) = (Count::default(), Count::default());
        use tracing_subscriber::Layer as _;
        let subscriber = tracing_subscriber::registry()
            .with(filter.clone())
            .with(global.clone())
            .with(per_layer.clone().with_filter(filter.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let emit = || {
                tracing::debug!(target: "app::db", "debug");
                tracing::info!(target: "app::db", "info");
                tracing::info!(target: "sqlx::query", "query");
                tracing::warn!(target: "sqlx::query", "slow");
            };
            emit();
            assert_eq!((global.take(), per_layer.take()), (3, 3));

            assert_eq!(
                filter.set("debug").unwrap(),
                ("info".into(), FilterSource::Config)
            );
            emit();
            assert_eq!((global.take(), per_layer.take()), (4, 4));

            // Directives: an EnvFilter behind the lock.
            assert_eq!(filter.set("info,sqlx=warn").unwrap().0, "debug");
            assert_eq!(filter.current(), "info,sqlx=warn");
            emit();
            assert_eq!((global.take(), per_layer.take()), (2, 2));
            assert!(!tracing::enabled!(target: "sqlx::query", tracing::Level::INFO));

            // A bad filter changes nothing.
            assert!(filter.set("info,sqlx=loud").is_err());
            assert_eq!(filter.current(), "info,sqlx=warn");
            emit();
            assert_eq!(global.take(), 2);
            per_layer.take();

            assert_eq!(filter.set("off").unwrap().0, "info,sqlx=warn");
            emit();
            assert_eq!(global.take(), 0);
            assert_eq!(
                filter.current_with_source(),
                ("off".into(), FilterSource::Runtime)
            );
        });
    }

    #[test]
    fn span_directives_work_through_the_filter() {
        let filter = filter("warn");
        let count = Count::default();
        let subscriber = tracing_subscriber::registry()
            .with(filter.clone())
            .with(count.clone());
        tracing::subscriber::with_default(subscriber, || {
            filter.set("warn,[checkout]=debug").unwrap();
            tracing::debug!("outside");
            assert_eq!(count.take(), 0);
            let span = tracing::info_span!("checkout");
            span.in_scope(|| tracing::debug!("inside"));
            assert_eq!(count.take(), 1);
            // Back to a level while the span is open: the span's directive is gone.
            filter.set("warn").unwrap();
            span.in_scope(|| tracing::debug!("inside, after"));
            drop(span);
            assert_eq!(count.take(), 0);
        });
    }

    #[test]
    fn restore_undoes_only_its_own_change() {
        let filter = filter("info");
        let (previous, source) = filter.set("debug").unwrap();
        assert!(filter.restore("debug", &previous, source));
        assert_eq!(
            filter.current_with_source(),
            ("info".into(), FilterSource::Config)
        );
        filter.set("debug").unwrap();
        filter.set("trace").unwrap();
        // Someone changed it since: the undo leaves theirs in force.
        assert!(!filter.restore("debug", "info", FilterSource::Config));
        assert_eq!(filter.current(), "trace");
    }
}
