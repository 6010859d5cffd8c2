//! A sliding window of request latencies and errors, recorded lock-free.
//!
//! The window is a ring of [`SLOTS`] time slots, each `window / SLOTS` long. A slot holds a
//! request count, an error count, the latency sum and a log-linear latency histogram (the
//! HdrHistogram layout, 16 sub-buckets per power of two: a bin's width is at most 1/16 of its
//! lower bound, so a quantile read at a bin's midpoint is within ±3.2% of the true value). Every
//! field is an atomic counter: recording is a handful of relaxed atomic adds, with no lock and no
//! allocation, from any number of threads. Slots are reused as time moves on; reading merges the
//! slots that belong to the current window (bins add up, so the merge is exact).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Time slots per window: a 5 min window moves in 30 s steps, a 10 s one in 1 s steps.
pub const SLOTS: usize = 10;

/// log2 of the sub-buckets per power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies are recorded in microseconds, up to 2^36 µs (about 19 hours); longer ones land in
/// the last bin.
const MAX_BITS: u32 = 36;
/// Bins: the first `SUB` values one each, then `SUB` per power of two up to `MAX_BITS`.
pub(crate) const BINS: usize = (SUB as usize) * (MAX_BITS - SUB_BITS + 1) as usize;

/// The bin of a latency in microseconds.
fn bin(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let us = us.min((1 << MAX_BITS) - 1);
    let exp = 63 - us.leading_zeros(); // ≥ SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = (us >> shift) & (SUB - 1);
    ((shift + 1) as usize) * SUB as usize + sub as usize
}

/// The lowest value of a bin and its width, in microseconds.
fn bin_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, 1);
    }
    let shift = index / SUB - 1;
    let sub = index % SUB;
    ((SUB + sub) << shift, 1 << shift)
}

/// One time slot.
struct Slot {
    /// The slot number (time / slot length) the counters belong to; `u64::MAX` when unused.
    epoch: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
    sum_us: AtomicU64,
    bins: Box<[AtomicU32]>,
}

impl Slot {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(u64::MAX),
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            bins: (0..BINS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn clear(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.sum_us.store(0, Ordering::Relaxed);
        for b in self.bins.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// A sliding window of request outcomes for one route.
pub struct Window {
    slot_len_ms: u64,
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("slot_len_ms", &self.slot_len_ms)
            .finish_non_exhaustive()
    }
}

/// What a window holds at one moment: merged counts and the latency histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Requests in the window.
    pub count: u64,
    /// Requests that failed (5xx or a panic).
    pub errors: u64,
    /// Sum of latencies, in microseconds.
    pub sum_us: u64,
    /// How long the window covers.
    pub span: Duration,
    bins: Vec<u64>,
}

impl Snapshot {
    /// The latency at quantile `q` (0.0 to 1.0), in milliseconds, read at the middle of its bin;
    /// `None` when the window is empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // The rank of the sample wanted, 1-based.
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bin_range(index);
                let mid = low as f64 + (width as f64 - 1.0) / 2.0;
                return Some(mid / 1000.0);
            }
        }
        None
    }

    /// Requests per second over the window.
    pub fn rate(&self) -> f64 {
        let secs = self.span.as_secs_f64();
        if secs > 0.0 {
            self.count as f64 / secs
        } else {
            0.0
        }
    }

    /// The average number of requests in flight over the window (Little's law: the latency sum
    /// over the window's length).
    pub fn concurrency(&self) -> f64 {
        let us = self.span.as_micros() as f64;
        if us > 0.0 {
            self.sum_us as f64 / us
        } else {
            0.0
        }
    }

    /// Failed requests / requests (0 when empty).
    pub fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }
}

impl Window {
    /// A window of `length` (at least [`SLOTS`] ms), in [`SLOTS`] slots.
    pub fn new(length: Duration) -> Self {
        let slot_len_ms = (length.as_millis() as u64 / SLOTS as u64).max(1);
        Self {
            slot_len_ms,
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
        }
    }

    /// The bytes one window holds (its counters), for the docs' memory figure.
    pub fn memory_bytes() -> usize {
        SLOTS * (std::mem::size_of::<Slot>() + BINS * std::mem::size_of::<AtomicU32>())
    }

    fn slot_for(&self, now_ms: u64) -> &Slot {
        let epoch = now_ms / self.slot_len_ms;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This thread moved the slot to a new epoch: it starts from zero. A recording racing
            // with the reset at the boundary may be lost (once per slot length, at most).
            slot.clear();
        }
        slot
    }

    /// Records one request at `now_ms` (milliseconds on any monotonic scale shared by every
    /// call): O(1), lock-free, no allocation.
    pub fn record(&self, now_ms: u64, latency: Duration, failed: bool) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let slot = self.slot_for(now_ms);
        slot.count.fetch_add(1, Ordering::Relaxed);
        if failed {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.sum_us.fetch_add(us, Ordering::Relaxed);
        slot.bins[bin(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The window ending at `now_ms`: the current slot and the `SLOTS - 1` before it.
    pub fn snapshot(&self, now_ms: u64) -> Snapshot {
        let current = now_ms / self.slot_len_ms;
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        let mut snapshot = Snapshot {
            count: 0,
            errors: 0,
            sum_us: 0,
            span: Duration::from_millis(self.slot_len_ms * SLOTS as u64),
            bins: vec![0; BINS],
        };
        for slot in self.slots.iter() {
            let epoch = slot.epoch.load(Ordering::Acquire);
            if epoch == u64::MAX || epoch < oldest || epoch > current {
                continue;
            }
            snapshot.count += slot.count.load(Ordering::Relaxed);
            snapshot.errors += slot.errors.load(Ordering::Relaxed);
            snapshot.sum_us += slot.sum_us.load(Ordering::Relaxed);
            for (total, bin) in snapshot.bins.iter_mut().zip(slot.bins.iter()) {
                *total += u64::from(bin.load(Ordering::Relaxed));
            }
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bins_cover_the_range_in_order_and_stay_within_their_error() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 30, (1 << 36) - 1, u64::MAX]) {
            let b = bin(us);
            assert!(b >= last, "bins grow with the value ({us})");
            assert!(b < BINS);
            last = b;
            let (low, width) = bin_range(b);
            if us < (1 << MAX_BITS) {
                assert!(
                    low <= us && us < low + width,
                    "{us} in [{low}, {})",
                    low + width
                );
                assert!(
                    width * SUB <= low.max(SUB),
                    "bin {b} is at most 1/16 of its value"
                );
            }
        }
    }

    #[test]
    fn quantiles_are_within_a_few_percent_of_the_exact_ones() {
        let w = Window::new(Duration::from_secs(10));
        // Log-spread latencies from 100 µs to 1 s.
        let mut values: Vec<u64> = (0..10_000u64)
            .map(|i| (100.0 * 10f64.powf(4.0 * i as f64 / 10_000.0)) as u64)
            .collect();
        for v in &values {
            w.record(0, Duration::from_micros(*v), false);
        }
        values.sort_unstable();
        let s = w.snapshot(0);
        for q in [0.5, 0.95, 0.99] {
            let exact =
                values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64 / 1000.0;
            let got = s.quantile_ms(q).unwrap();
            assert!(
                (got - exact).abs() / exact < 0.04,
                "q{q}: {got} ms against {exact} ms"
            );
        }
    }

    #[test]
    fn the_window_slides_and_forgets_old_slots() {
        let w = Window::new(Duration::from_secs(10)); // 1 s slots
        w.record(0, Duration::from_millis(10), false);
        w.record(5_500, Duration::from_millis(20), true);
        let s = w.snapshot(9_999);
        assert_eq!((s.count, s.errors), (2, 1));
        // 30 ms of work over a 10 s window.
        assert!((s.concurrency() - 0.003).abs() < 1e-9);
        assert_eq!(s.error_rate(), 0.5);
        // At 10.5 s the slot of t = 0 is out of the window.
        let s = w.snapshot(10_500);
        assert_eq!((s.count, s.errors), (1, 1));
        // A new recording in the reused slot starts from zero.
        w.record(20_000, Duration::from_millis(30), false);
        let s = w.snapshot(20_000);
        assert_eq!(s.count, 1);
        assert!((s.quantile_ms(0.5).unwrap() - 30.0).abs() < 1.0);
        assert_eq!(w.snapshot(40_000).count, 0);
        assert_eq!(w.snapshot(40_000).quantile_ms(0.5), None);
    }

    #[test]
    fn many_threads_record_exact_counts() {
        let w = Arc::new(Window::new(Duration::from_secs(60)));
        // Move the slot into its epoch first: a recording racing with the reset at a slot
        // boundary may be lost (documented on `slot_for`), and this test is about the counts
        // within a slot, from many threads. Without it, the threads' first recordings race
        // with the reset (seen once in `.ci/run`, 399,989 of 400,000).
        w.record(1_000, Duration::from_micros(1), false);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        w.record(
                            1_000,
                            Duration::from_micros(i % 5_000 + t),
                            i.is_multiple_of(10),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = w.snapshot(1_000);
        assert_eq!(s.count, 400_001);
        assert_eq!(s.errors, 40_000);
        assert_eq!(s.bins.iter().sum::<u64>(), 400_001);
    }
}
