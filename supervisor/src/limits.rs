//! The limits the supervisor enforces while a job runs, beyond the kernel's own (memory, pids):
//! CPU time of the whole job (polled from its cgroup), idle time (no output), and the output
//! byte cap. [`watch`] returns the first limit the job breaks; the caller then ends the job
//! like a deadline (TERM → grace → kill the cgroup).
//!
//! Why poll CPU time: `RLIMIT_CPU` is per process and every `fork` starts a fresh count, so a
//! job that spreads its work over children never reaches it. The cgroup's `cpu.stat`
//! `usage_usec` (cgroup2, a core file) or `cpuacct.usage` (v1) counts every process of the job,
//! exited ones included. Polling overshoots by at most one interval × the host's CPUs; the
//! interval shrinks as the job nears its limit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use stockade_protocol::{Cause, Enforcement, Mechanism};
use stockade_sandbox::cgroup::CgroupError;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Polling interval bounds for the CPU-time limit.
const CPU_POLL_MIN: Duration = Duration::from_millis(20);
const CPU_POLL_MAX: Duration = Duration::from_millis(250);

/// The supervisor-enforced limits of one job (already narrowed by its request).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobLimits {
    /// CPU time of every process of the job together.
    pub cpu: Option<Duration>,
    /// Longest stretch without a byte on stdout or stderr.
    pub idle: Option<Duration>,
    /// Bytes of stdout + stderr delivered; beyond, output is discarded and the job ended.
    pub output_bytes: Option<u64>,
}

/// Output accounting shared by the two pumps (stdout, stderr) and the watchdog.
#[derive(Debug)]
pub struct OutputMeter {
    limit: Option<u64>,
    delivered: AtomicU64,
    truncated: AtomicBool,
    /// Milliseconds since `epoch` of the last byte read from either pipe.
    last_output_ms: AtomicU64,
    epoch: Instant,
    hit: Notify,
}

impl OutputMeter {
    /// A meter for a job with this output limit (`None`: unlimited).
    pub fn new(limit: Option<u64>) -> OutputMeter {
        OutputMeter {
            limit,
            delivered: AtomicU64::new(0),
            truncated: AtomicBool::new(false),
            last_output_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            hit: Notify::new(),
        }
    }

    /// `n` bytes were read from a pipe: note the activity, and return how many of them may be
    /// delivered. Both pumps share the budget, so stdout and stderr together get exactly the
    /// limit. Once the limit is reached the job is told to end ([`watch`] returns
    /// `OutputLimit`) and everything further is counted as truncated.
    pub fn admit(&self, n: usize) -> usize {
        self.touch();
        let n = n as u64;
        let Some(limit) = self.limit else {
            self.delivered.fetch_add(n, Ordering::Relaxed);
            return n as usize;
        };
        let mut granted = 0;
        let _ = self
            .delivered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                granted = n.min(limit.saturating_sub(d));
                Some(d + granted)
            });
        if granted < n {
            self.truncated.store(true, Ordering::Release);
            // notify_one stores a permit: the watchdog sees it even if it is not waiting yet.
            self.hit.notify_one();
        }
        granted as usize
    }

    /// Restart the idle clock (the job just started, or wrote something).
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_output_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Bytes delivered (or handed to the client's channel) so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Whether the job wrote more than its limit.
    pub fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Acquire)
    }

    fn last_output(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_output_ms.load(Ordering::Acquire))
    }
}

/// Resolve with the cause once the running job breaks one of `limits`; never resolves if it
/// keeps within them (the caller races this against the job's exit, deadline and cancel).
/// `cpu_usage_ns` reads the job cgroup's CPU time ([`JobCgroup::cpu_usage_ns`]).
///
/// [`JobCgroup::cpu_usage_ns`]: stockade_sandbox::cgroup::JobCgroup::cpu_usage_ns
pub async fn watch(
    job: &str,
    cpu_usage_ns: impl Fn() -> Result<u64, CgroupError>,
    limits: JobLimits,
    meter: &OutputMeter,
) -> Cause {
    let output = async {
        if meter.limit.is_none() {
            return std::future::pending().await;
        }
        meter.hit.notified().await;
    };
    let idle = async {
        let Some(idle) = limits.idle else {
            return std::future::pending().await;
        };
        loop {
            let due = meter.last_output() + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    let cpu = async {
        let Some(limit) = limits.cpu else {
            return std::future::pending().await;
        };
        let limit_ns = limit.as_nanos() as u64;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        loop {
            match cpu_usage_ns() {
                Ok(used) if used >= limit_ns => return,
                Ok(used) => {
                    // At full speed on every CPU the job needs (limit - used) / cpus to get
                    // there: sleep about that, within bounds.
                    let left = Duration::from_nanos((limit_ns - used) / cpus);
                    tokio::time::sleep(left.clamp(CPU_POLL_MIN, CPU_POLL_MAX)).await;
                }
                Err(e) => {
                    // Enforcement cannot continue blind: end the job rather than let it run
                    // past a limit nobody checks.
                    tracing::error!(job, "CPU limit: {e}; ending the job");
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = output => Cause::OutputLimit,
        () = idle => Cause::IdleTimeout,
        () = cpu => Cause::CpuTimeout,
    }
}

/// The enforcement-report lines of these limits.
pub fn mechanisms(limits: &JobLimits, cpu_source: &str) -> Vec<Mechanism> {
    let line = |name: &str, detail: Option<String>| match detail {
        Some(detail) => Mechanism {
            name: name.into(),
            status: Enforcement::Enforced,
            detail,
        },
        None => Mechanism {
            name: name.into(),
            status: Enforcement::NotRequested,
            detail: "no limit".into(),
        },
    };
    vec![
        line(
            "cgroup.cpu_time",
            limits.cpu.map(|c| {
                format!(
                    "{} ms of CPU for the whole job, polled from {cpu_source}",
                    c.as_millis()
                )
            }),
        ),
        line(
            "deadline.idle",
            limits
                .idle
                .map(|i| format!("{} ms without output ends the job", i.as_millis())),
        ),
        line(
            "output.limit",
            limits
                .output_bytes
                .map(|b| format!("{b} bytes of stdout and stderr together, then the job ends")),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_streams_share_the_output_budget_exactly() {
        let m = OutputMeter::new(Some(10));
        assert_eq!(m.admit(4), 4);
        assert_eq!(m.admit(4), 4);
        assert!(!m.truncated());
        assert_eq!(m.admit(4), 2);
        assert!(m.truncated());
        assert_eq!(m.admit(4), 0);
        assert_eq!(m.delivered(), 10);

        let unlimited = OutputMeter::new(None);
        assert_eq!(unlimited.admit(1 << 20), 1 << 20);
        assert_eq!(unlimited.delivered(), 1 << 20);
        assert!(!unlimited.truncated());
    }

    #[test]
    fn exactly_the_limit_is_not_truncation() {
        let m = OutputMeter::new(Some(8));
        assert_eq!(m.admit(8), 8);
        assert!(!m.truncated());
        assert_eq!(m.admit(1), 0);
        assert!(m.truncated());
    }

    fn no_cpu() -> Result<u64, CgroupError> {
        Ok(0)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_a_silence_as_long_as_the_limit() {
        let m = OutputMeter::new(None);
        let limits = JobLimits {
            idle: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let start = Instant::now();
        let talk = async {
            // Output at 0.7 s and 1.4 s: the silence that counts starts at 1.4 s.
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(700)).await;
                m.admit(1);
            }
            std::future::pending::<()>().await
        };
        let cause = tokio::select! {
            c = watch("j", no_cpu, limits, &m) => c,
            () = talk => unreachable!(),
        };
        assert_eq!(cause, Cause::IdleTimeout);
        assert!(start.elapsed() >= Duration::from_millis(2400));
    }

    #[tokio::test(start_paused = true)]
    async fn cpu_fires_once_the_cgroup_reports_the_limit() {
        let m = OutputMeter::new(None);
        let limits = JobLimits {
            cpu: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let reads = std::cell::Cell::new(0u64);
        // Each read: 0.5 s more CPU.
        let usage = || {
            reads.set(reads.get() + 1);
            Ok(reads.get() * 500_000_000)
        };
        assert_eq!(watch("j", usage, limits, &m).await, Cause::CpuTimeout);
        assert_eq!(reads.get(), 4);
        // A cgroup that cannot be read ends the job rather than letting it run unchecked.
        let broken = || {
            Err(CgroupError::NotFound {
                name: "j".into(),
                parent: "/x".into(),
            })
        };
        assert_eq!(watch("j", broken, limits, &m).await, Cause::CpuTimeout);
    }

    #[tokio::test]
    async fn output_limit_fires_when_the_budget_is_exceeded() {
        let m = OutputMeter::new(Some(3));
        m.admit(3);
        m.admit(1);
        let limits = JobLimits {
            output_bytes: Some(3),
            ..Default::default()
        };
        assert_eq!(watch("j", no_cpu, limits, &m).await, Cause::OutputLimit);
    }

    #[test]
    fn the_report_names_each_limit() {
        let l = JobLimits {
            cpu: Some(Duration::from_secs(2)),
            idle: None,
            output_bytes: Some(1 << 20),
        };
        let m = mechanisms(&l, "cpu.stat");
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0].detail,
            "2000 ms of CPU for the whole job, polled from cpu.stat"
        );
        assert_eq!(m[1].status, Enforcement::NotRequested);
        assert_eq!(
            m[2].detail,
            "1048576 bytes of stdout and stderr together, then the job ends"
        );
    }
}
