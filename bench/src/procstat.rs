//! CPU time and memory of a process, from `/proc/PID/stat`, `/proc/PID/task/*/schedstat` and
//! `/proc/PID/status`.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Clock ticks per second (`getconf CLK_TCK`), the unit of `utime` and `stime` in `/proc/PID/stat`.
/// Linux has used 100 on every common architecture for decades; that is the fallback.
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// CPU time of a process, in clock ticks: in user space (`utime`) and in the kernel on its behalf
/// (`stime`: system calls, and the network stack work they do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessTicks {
    pub user: u64,
    pub system: u64,
}

impl ProcessTicks {
    pub fn total(&self) -> u64 {
        self.user + self.system
    }
}

/// User plus system CPU time of all the process's threads so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    Ok(process_ticks(pid)?.total())
}

/// User and system CPU time of all the process's threads so far.
pub fn process_ticks(pid: u32) -> Result<ProcessTicks> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&text).with_context(|| format!("parsing {path}"))
}

/// `utime` and `stime` from the text of `/proc/PID/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`: field 3 (state) is the first after it,
/// and utime and stime are fields 14 and 15.
pub fn parse_stat_ticks(text: &str) -> Result<ProcessTicks> {
    let Some((_, rest)) = text.rsplit_once(')') else { bail!("no `)` after the command name") };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let value = fields.get(n - 3).with_context(|| format!("field {n} missing"))?;
        value.parse().with_context(|| format!("field {n} is {value:?}"))
    };
    Ok(ProcessTicks { user: field(14)?, system: field(15)? })
}

/// User plus system CPU time of this process and of the children it has waited for (`oha` runs), in
/// clock ticks: fields 14-17 of `/proc/self/stat`.
pub fn own_and_children_ticks() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let Some((_, rest)) = text.rsplit_once(')') else { bail!("no `)` in /proc/self/stat") };
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    anyhow::ensure!(fields.len() == 4, "/proc/self/stat has no utime..cstime");
    Ok(fields.iter().sum())
}

/// CPU time of the whole machine, in clock ticks summed over all CPUs (first line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// Time the hypervisor ran something else while this VM's CPUs wanted to run.
    pub steal: u64,
}

pub fn machine_ticks() -> Result<MachineTicks> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine_ticks(&text).context("parsing /proc/stat")
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`; guest time is already
/// counted in user time, so only the first eight count.
pub fn parse_machine_ticks(text: &str) -> Result<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu ")).context("no `cpu` line")?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).take(8).map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(fields.len() == 8, "the `cpu` line has {} fields", fields.len());
    let total: u64 = fields.iter().sum();
    Ok(MachineTicks { busy: total - fields[3] - fields[4], steal: fields[7] })
}

/// CPU time charged to one task (a thread; a process's main thread when given its pid) so far, in
/// nanoseconds: the first field of `/proc/TASK/schedstat`, the scheduler's own count, where
/// `/proc/PID/stat` counts in clock ticks. For a task on a CPU right now it is as of its last tick or
/// context switch; for one that is waiting (an echo server blocked in `read`) it is exact. `task` is
/// a pid or `thread-self`.
pub fn task_cpu_ns(task: &str) -> Result<u64> {
    let path = format!("/proc/{task}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_schedstat_ns(&text).with_context(|| format!("parsing {path}"))
}

/// CPU time charged to the threads a process has now, in nanoseconds: [`task_cpu_ns`] summed over
/// `/proc/PID/task/*`, each exact to its thread's last context switch or tick. `/proc/PID/stat` counts
/// the same time (the kernel scales its tick samples of `utime` and `stime` so that their sum is the
/// scheduler's), but rounds each of the two down to whole clock ticks at every reading, and it keeps
/// the time of threads that ended, which this sum loses: see [`trusted_scheduler_seconds`].
pub fn process_cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let task = task.with_context(|| format!("reading {dir}"))?;
        let tid = task.file_name();
        match task_cpu_ns(&format!("{pid}/task/{}", tid.to_string_lossy())) {
            Ok(ns) => total += ns,
            // The thread ended after the listing.
            Err(_) if !task.path().exists() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(total)
}

/// Clock ticks by which the scheduler's count may fall short of `utime + stime` before it is not
/// trusted: each of the two is rounded down to a whole tick at both readings.
pub const STAT_ROUNDING_TICKS: f64 = 2.0;

/// The CPU seconds a process used between two readings: `scheduler` (from [`process_cpu_ns`]) when it
/// agrees with `stat` (`utime + stime` over the same span) to within their rounding, else `stat`. The
/// scheduler's sum falls short when a thread ended between the readings (a tokio blocking-pool thread
/// that went idle, say), taking all its time with it, and reads zero when the kernel keeps no
/// schedstat; `/proc/PID/stat` keeps both right.
pub fn trusted_scheduler_seconds(scheduler: f64, stat: f64, ticks_per_second: f64) -> f64 {
    if scheduler + STAT_ROUNDING_TICKS / ticks_per_second < stat { stat } else { scheduler }
}

/// The time on CPU from the text of `/proc/TASK/schedstat` (`on-cpu-ns wait-ns timeslices`).
pub fn parse_schedstat_ns(text: &str) -> Result<u64> {
    let first = text.split_whitespace().next().context("no fields")?;
    first.parse().with_context(|| format!("the time on CPU is {first:?}"))
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size since the process started.
    pub hwm_kib: u64,
    /// `RssAnon`: resident heap, stacks and other anonymous memory now.
    pub anon_kib: u64,
    /// `RssFile`: resident pages of mapped files now, mostly the executable and its libraries.
    pub file_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_memory(&text).with_context(|| format!("parsing {path}"))
}

/// `VmRSS`, `VmHWM`, `RssAnon` and `RssFile` from the text of `/proc/PID/status` (lines like `VmHWM:     5120 kB`).
pub fn parse_status_memory(text: &str) -> Result<Memory> {
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} line"))?;
        let number = line.split_whitespace().next().unwrap_or_default();
        number.parse().with_context(|| format!("{name} is {line:?}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
        anon_kib: field("RssAnon")?,
        file_kib: field("RssFile")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (trellis (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 3 0 100 0 0";
        let ticks = parse_stat_ticks(stat).expect("parse");
        assert_eq!(ticks, ProcessTicks { user: 1234, system: 567 });
        assert_eq!(ticks.total(), 1234 + 567);
    }

    #[test]
    fn status_memory_reads_rss_and_the_high_water_mark() {
        let status = "Name:\ttrellis-proxy\nVmPeak:\t  80000 kB\nVmHWM:\t    6144 kB\nVmRSS:\t    5120 kB\n\
                      RssAnon:\t    1024 kB\nRssFile:\t    4096 kB\nRssShmem:\t       0 kB\n";
        let expected = Memory { rss_kib: 5120, hwm_kib: 6144, anon_kib: 1024, file_kib: 4096 };
        assert_eq!(parse_status_memory(status).expect("parse"), expected);
    }

    #[test]
    fn machine_ticks_leave_out_idle_iowait_and_guest_time() {
        let stat = "cpu  100 5 50 1000 20 1 4 7 30 0\ncpu0 50 2 25 500 10 0 2 3 15 0\n";
        assert_eq!(parse_machine_ticks(stat).expect("parse"), MachineTicks { busy: 167, steal: 7 });
    }

    #[test]
    fn schedstat_gives_the_time_on_cpu_in_nanoseconds() {
        assert_eq!(parse_schedstat_ns("123456789 5000 42\n").expect("parse"), 123_456_789);
        assert!(parse_schedstat_ns("").is_err());
        assert!(parse_schedstat_ns("x 1 2").is_err());
    }

    /// Multiplications [`busy_work`] does: about 5 ms on this machine's CPUs.
    const BUSY_STEPS: u64 = 5_000_000;
    /// The least CPU time [`busy_work`] is charged on any machine CI runs on.
    const BUSY_MIN_NS: u64 = 1_000_000;

    /// A fixed amount of work, not a span of wall time: other threads may take the CPU meanwhile, but
    /// this work is charged to the calling thread whatever they do. Ends with a short sleep, which
    /// switches the thread out and so brings its count up to date whatever the tick rate.
    fn busy_work() -> u64 {
        let mut x = 1u64;
        for _ in 0..BUSY_STEPS {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        x
    }

    #[test]
    fn a_thread_s_cpu_time_grows_while_it_works() {
        let before = task_cpu_ns("thread-self").expect("own thread cpu");
        let x = busy_work();
        let after = task_cpu_ns("thread-self").expect("own thread cpu");
        assert!(after >= before + BUSY_MIN_NS, "{before} -> {after} ns after {BUSY_STEPS} multiplications ({x})");
    }

    #[test]
    fn a_process_s_cpu_time_counts_the_work_of_each_of_its_threads() {
        // Both workers stay alive until the process is read, so the sum must hold what each was charged.
        let done = std::sync::Arc::new(std::sync::Barrier::new(3));
        let read = std::sync::Arc::new(std::sync::Barrier::new(3));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (done, read) = (done.clone(), read.clone());
                std::thread::spawn(move || {
                    busy_work();
                    let charged = task_cpu_ns("thread-self").expect("thread cpu");
                    done.wait();
                    read.wait();
                    charged
                })
            })
            .collect();
        done.wait();
        let total = process_cpu_ns(std::process::id()).expect("process cpu");
        read.wait();
        let charged: Vec<u64> = workers.into_iter().map(|w| w.join().expect("worker")).collect();
        assert!(charged.iter().all(|&c| c >= BUSY_MIN_NS), "workers charged {charged:?} ns");
        let workers_total: u64 = charged.iter().sum();
        assert!(total >= workers_total, "process {total} ns, its two workers alone {workers_total} ns");
    }

    #[test]
    fn the_scheduler_s_count_stands_unless_it_falls_short_of_utime_and_stime_beyond_their_rounding() {
        // 100 ticks per second: two ticks are 0.02 s.
        assert_eq!(trusted_scheduler_seconds(1.234, 1.23, 100.0), 1.234);
        assert_eq!(trusted_scheduler_seconds(1.215, 1.23, 100.0), 1.215);
        // A thread that ended took its time out of the sum; schedstat off reads zero.
        assert_eq!(trusted_scheduler_seconds(0.9, 1.23, 100.0), 1.23);
        assert_eq!(trusted_scheduler_seconds(0.0, 1.23, 100.0), 1.23);
    }

    #[test]
    fn our_own_process_can_be_read() {
        own_and_children_ticks().expect("own cpu");
        machine_ticks().expect("machine cpu");
        let pid = std::process::id();
        assert!(memory(pid).expect("memory").hwm_kib > 0);
        cpu_ticks(pid).expect("cpu");
        assert!(clock_ticks() > 0);
    }
}
