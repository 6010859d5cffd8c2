//! Process and machine metrics (`[metrics] system`, on by default): sampled on qiflow's worker
//! every `[metrics] system_interval` (default 15 s) with `sysinfo`, and served on `/metrics` with
//! the names Prometheus client libraries use for the process (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, …) and `system_*` names for the machine. Nothing runs on the
//! request path.
//!
//! The machine's disks are those holding the log directory and the audit trail (label `volume`
//! = `logs` or `audit`, with their `mountpoint`): the volumes qiflow itself fills.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::Label;
use serde::Serialize;
use sysinfo::{
    CpuRefreshKind, Disks, MemoryRefreshKind, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate,
    RefreshKind, System,
};

use crate::metrics::Metrics;

/// The most network interfaces given series (the first ones, by name); a host with more is
/// rare, and every series costs the scrape.
const MAX_INTERFACES: usize = 16;

/// The latest sample, for the health JSON (resident memory) and the dashboard.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latest(Arc<Mutex<Option<Snapshot>>>);

impl Latest {
    /// The resident memory of the latest sample, if there was one.
    pub(crate) fn rss(&self) -> Option<u64> {
        self.get()?.process.resident_bytes
    }

    /// The latest sample, if there was one.
    pub(crate) fn get(&self) -> Option<Snapshot> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One sample of the process and the machine: what the gauges were set to.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Snapshot {
    /// When (RFC 3339).
    pub(crate) sampled_at: String,
    pub(crate) process: ProcessSample,
    pub(crate) machine: MachineSample,
}

/// The process's figures; `None` where the platform does not tell.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ProcessSample {
    /// CPU used since the previous sample, in cores (1.0: one core busy).
    pub(crate) cpu_ratio: Option<f64>,
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) virtual_bytes: Option<u64>,
    pub(crate) threads: Option<usize>,
    pub(crate) open_fds: Option<usize>,
    pub(crate) max_fds: Option<usize>,
}

/// The machine's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct MachineSample {
    /// Busy share of all CPUs, 0 to 1.
    pub(crate) cpu_ratio: Option<f64>,
    /// Load average over 1, 5 and 15 minutes.
    pub(crate) load: [f64; 3],
    pub(crate) memory_total_bytes: u64,
    pub(crate) memory_available_bytes: u64,
    pub(crate) cgroup_memory_limit_bytes: Option<u64>,
    pub(crate) volumes: Vec<VolumeSample>,
}

/// The space of one volume qiflow writes to.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VolumeSample {
    /// `logs` or `audit`.
    pub(crate) volume: &'static str,
    pub(crate) mountpoint: String,
    pub(crate) size_bytes: u64,
    pub(crate) available_bytes: u64,
}

/// One volume qiflow writes to.
struct Volume {
    /// `logs` or `audit`.
    purpose: &'static str,
    path: PathBuf,
}

/// Samples the process and the machine into gauges and counters on qiflow's recorder. A series
/// appears with its first value: one the platform does not give (open files outside Linux and
/// the like) never shows as a made-up zero.
pub(crate) struct Sampler {
    metrics: Metrics,
    system: System,
    disks: Disks,
    networks: Networks,
    pid: Option<Pid>,
    volumes: Vec<Volume>,
    /// The sample being taken.
    current: Snapshot,
    latest: Latest,
}

impl Sampler {
    /// A sampler for this process, watching the volumes of `log_dir` and `audit_dir` (when
    /// auditing to files).
    pub(crate) fn new(metrics: Metrics, log_dir: &Path, audit_dir: Option<&Path>) -> Self {
        let mut volumes = vec![Volume {
            purpose: "logs",
            path: log_dir.to_owned(),
        }];
        if let Some(dir) = audit_dir {
            volumes.push(Volume {
                purpose: "audit",
                path: dir.to_owned(),
            });
        }
        Self {
            system: System::new_with_specifics(
                RefreshKind::nothing()
                    .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                    .with_memory(MemoryRefreshKind::nothing().with_ram()),
            ),
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            pid: sysinfo::get_current_pid().ok(),
            volumes,
            current: Snapshot::default(),
            latest: Latest::default(),
            metrics,
        }
    }

    fn set(&self, name: &'static str, value: f64) {
        self.metrics.gauge(name, Vec::new()).set(value);
    }

    /// The handle the health JSON and the dashboard read the latest sample from.
    pub(crate) fn latest(&self) -> Latest {
        self.latest.clone()
    }

    /// Takes one sample (blocking reads of `/proc` and the like: call it off the request path).
    pub(crate) fn sample(&mut self) {
        self.current = Snapshot {
            sampled_at: crate::alert::rfc3339(std::time::SystemTime::now()),
            ..Snapshot::default()
        };
        self.sample_process();
        self.sample_machine();
        self.sample_volumes();
        self.sample_networks();
        *self.latest.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.current.clone());
    }

    fn sample_process(&mut self) {
        let Some(pid) = self.pid else {
            return;
        };
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_tasks(),
        );
        let Some(process) = self.system.process(pid) else {
            return;
        };
        // Whole seconds: the recorder's counters are integers.
        let cpu_seconds = process.accumulated_cpu_time() / 1_000;
        let resident = process.memory();
        let virtual_memory = process.virtual_memory() as f64;
        let start_time = process.start_time() as f64;
        let open = process.open_files();
        let limit = process.open_files_limit();
        // The main thread is the process itself, not one of its tasks, on some platforms.
        let threads = process.tasks().map(|tasks| tasks.len().max(1));
        self.metrics
            .counter("process_cpu_seconds_total", Vec::new())
            .absolute(cpu_seconds);
        self.set("process_resident_memory_bytes", resident as f64);
        self.current.process = ProcessSample {
            cpu_ratio: Some(f64::from(process.cpu_usage()) / 100.0),
            resident_bytes: Some(resident),
            virtual_bytes: Some(process.virtual_memory()),
            threads,
            open_fds: open,
            max_fds: limit,
        };
        self.set("process_virtual_memory_bytes", virtual_memory);
        self.set("process_start_time_seconds", start_time);
        if let Some(open) = open {
            self.set("process_open_fds", open as f64);
        }
        if let Some(limit) = limit {
            self.set("process_max_fds", limit as f64);
        }
        if let Some(threads) = threads {
            self.set("process_threads", threads as f64);
        }
    }

    fn sample_machine(&mut self) {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let cpu = f64::from(self.system.global_cpu_usage()) / 100.0;
        self.set("system_cpu_utilization_ratio", cpu);
        let load = System::load_average();
        let machine = &mut self.current.machine;
        machine.cpu_ratio = Some(cpu);
        machine.load = [load.one, load.five, load.fifteen];
        machine.memory_total_bytes = self.system.total_memory();
        machine.memory_available_bytes = self.system.available_memory();
        machine.cgroup_memory_limit_bytes = self.system.cgroup_limits().map(|l| l.total_memory);
        for (period, value) in [("1m", load.one), ("5m", load.five), ("15m", load.fifteen)] {
            self.metrics
                .gauge("system_load_average", vec![Label::new("period", period)])
                .set(value);
        }
        self.set(
            "system_memory_total_bytes",
            self.system.total_memory() as f64,
        );
        self.set(
            "system_memory_available_bytes",
            self.system.available_memory() as f64,
        );
        if let Some(limits) = self.system.cgroup_limits() {
            self.set(
                "system_cgroup_memory_limit_bytes",
                limits.total_memory as f64,
            );
        }
    }

    fn sample_volumes(&mut self) {
        self.disks.refresh(true);
        for volume in &self.volumes {
            let path = resolve(&volume.path);
            // The disk mounted deepest above the path holds it.
            let Some(disk) = self
                .disks
                .list()
                .iter()
                .filter(|d| path.starts_with(d.mount_point()))
                .max_by_key(|d| d.mount_point().as_os_str().len())
            else {
                continue;
            };
            let labels = || {
                vec![
                    Label::new("volume", volume.purpose),
                    Label::new(
                        "mountpoint",
                        disk.mount_point().to_string_lossy().into_owned(),
                    ),
                ]
            };
            self.current.machine.volumes.push(VolumeSample {
                volume: volume.purpose,
                mountpoint: disk.mount_point().to_string_lossy().into_owned(),
                size_bytes: disk.total_space(),
                available_bytes: disk.available_space(),
            });
            let usage = disk.usage();
            self.metrics
                .gauge("system_filesystem_size_bytes", labels())
                .set(disk.total_space() as f64);
            self.metrics
                .gauge("system_filesystem_available_bytes", labels())
                .set(disk.available_space() as f64);
            self.metrics
                .counter("system_disk_read_bytes_total", labels())
                .absolute(usage.total_read_bytes);
            self.metrics
                .counter("system_disk_written_bytes_total", labels())
                .absolute(usage.total_written_bytes);
        }
    }

    fn sample_networks(&mut self) {
        self.networks.refresh(true);
        let mut interfaces: Vec<_> = self.networks.iter().collect();
        interfaces.sort_by(|a, b| a.0.cmp(b.0));
        for (name, data) in interfaces.into_iter().take(MAX_INTERFACES) {
            let labels = || vec![Label::new("interface", name.clone())];
            self.metrics
                .counter("system_network_receive_bytes_total", labels())
                .absolute(data.total_received());
            self.metrics
                .counter("system_network_transmit_bytes_total", labels())
                .absolute(data.total_transmitted());
        }
    }
}

/// Where `path` is, for finding its filesystem: absolute (a relative one is taken from the
/// working directory, as the log writer takes it), through its nearest existing ancestor with
/// links resolved (the directory may not exist before the first line is written).
fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    };
    absolute
        .ancestors()
        .find_map(|ancestor| std::fs::canonicalize(ancestor).ok())
        .unwrap_or(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_not_made_yet_resolves_to_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(resolve(&dir.path().join("logs/not/yet")), real);
        assert!(resolve(Path::new("logs")).is_absolute());
    }
}
