//! The data that flows through pollux-perf: what a job asks for ([`JobSpec`], parsed
//! from fio's options by [`super::options`]) and what it measured ([`JobResult`],
//! printed by [`super::report`]). Names follow fio's options and fio's JSON fields.

use std::time::Duration;

/// fio's `rw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RwMode {
    /// `read`: sequential reads.
    #[default]
    Read,
    /// `write`: sequential writes.
    Write,
    /// `randread`.
    RandRead,
    /// `randwrite`.
    RandWrite,
    /// `rw` / `readwrite`: sequential mixed.
    ReadWrite,
    /// `randrw`: random mixed.
    RandRw,
}

impl RwMode {
    /// Whether offsets are random.
    pub fn is_random(self) -> bool {
        matches!(self, RwMode::RandRead | RwMode::RandWrite | RwMode::RandRw)
    }
    /// Whether it reads.
    pub fn reads(self) -> bool {
        !matches!(self, RwMode::Write | RwMode::RandWrite)
    }
    /// Whether it writes.
    pub fn writes(self) -> bool {
        !matches!(self, RwMode::Read | RwMode::RandRead)
    }
}

/// Data direction, indexing per-direction arrays (fio's `ddir`: 0 read, 1 write, 2 trim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ddir {
    /// Read.
    Read = 0,
    /// Write.
    Write = 1,
    /// Trim.
    Trim = 2,
}

/// Block sizes of one direction: fio's `bs`, `bsrange` or `bssplit` (sizes in bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockSizes {
    /// One size (`bs=4k`).
    Fixed(u64),
    /// Any multiple of `min` from `min` to `max` (`bsrange=4k-64k`), uniformly.
    Range {
        /// Smallest.
        min: u64,
        /// Largest.
        max: u64,
    },
    /// Sizes with percentages (`bssplit=4k/50:64k/50`); percentages add up to 100.
    Split(Vec<(u64, u32)>),
}

impl Default for BlockSizes {
    fn default() -> Self {
        BlockSizes::Fixed(4096)
    }
}

impl BlockSizes {
    /// The largest size it can give.
    pub fn max(&self) -> u64 {
        match self {
            BlockSizes::Fixed(b) => *b,
            BlockSizes::Range { max, .. } => *max,
            BlockSizes::Split(v) => v.iter().map(|x| x.0).max().unwrap_or(4096),
        }
    }
    /// The smallest size it can give.
    pub fn min(&self) -> u64 {
        match self {
            BlockSizes::Fixed(b) => *b,
            BlockSizes::Range { min, .. } => *min,
            BlockSizes::Split(v) => v.iter().map(|x| x.0).min().unwrap_or(4096),
        }
    }
}

/// fio's `random_distribution`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Distribution {
    /// Uniform (`random`).
    #[default]
    Random,
    /// `zipf:theta`.
    Zipf(f64),
    /// `pareto:h`.
    Pareto(f64),
    /// `normal:dev` (deviation in percent of the range, as fio's `normal`).
    Normal(f64),
}

/// fio's `verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerifyKind {
    /// No verification.
    #[default]
    None,
    /// CRC32C of each block (`crc32c`, also `crc32c-intel`).
    Crc32c,
    /// MD5 of each block.
    Md5,
    /// A fixed pattern (`verify_pattern`), checked byte for byte.
    Pattern,
}

/// Where a job's I/O goes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// An in-process null bdev of `size` bytes (fio's `null`).
    #[default]
    Null,
    /// An in-process malloc bdev of `size` bytes.
    Malloc,
    /// A file or block device through the engine's io_uring bdev (fio's `io_uring`,
    /// `libaio`, `psync`, `sync`, `pvsync`, `posixaio` map here).
    Uring,
    /// A remote NVMe-oF namespace (`--target` gives SPDK's transport ID string).
    Nvmf,
    /// A namespace of a local PCIe controller through Pollux's userspace driver
    /// (`--target='trtype:pcie traddr:0000:00:04.0 [ns:N]'`; the device bound to vfio-pci).
    Nvme,
}

/// Output formats (fio's `--output-format`, comma-separated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// The human report.
    Normal,
    /// JSON.
    Json,
    /// JSON with the full latency histogram (`clat_ns.bins`).
    JsonPlus,
    /// fio's terse format version 3 (semicolon-separated).
    Terse,
}

/// One job, after `[global]` defaults and the job's own section are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// `name` (the section name in a job file).
    pub name: String,
    /// `rw`.
    pub rw: RwMode,
    /// `rwmixread` in percent (`rwmixwrite` sets 100 - it). Default 50.
    pub rwmixread: u32,
    /// `bs` / `bsrange` / `bssplit` for reads.
    pub bs_read: BlockSizes,
    /// The same for writes (fio allows `bs=4k,64k` for read,write).
    pub bs_write: BlockSizes,
    /// `iodepth`. Default 1.
    pub iodepth: u32,
    /// `iodepth_batch_submit` (0: as fio, submit as they come). Default 1.
    pub iodepth_batch_submit: u32,
    /// `iodepth_batch_complete_min`. Default 1.
    pub iodepth_batch_complete_min: u32,
    /// `numjobs`: clones of this job. Default 1.
    pub numjobs: u32,
    /// `size` in bytes (of the file/device region the job uses; for null/malloc the
    /// bdev's size). None: the whole device or file.
    pub size: Option<u64>,
    /// `offset` in bytes: where the region starts.
    pub offset: u64,
    /// `io_size` in bytes: how much to transfer before stopping (default: `size`).
    pub io_size: Option<u64>,
    /// `runtime`.
    pub runtime: Option<Duration>,
    /// `time_based`: run for `runtime` even when `io_size` is done.
    pub time_based: bool,
    /// `ramp_time`: run this long before measuring.
    pub ramp_time: Duration,
    /// `startdelay`.
    pub startdelay: Duration,
    /// `norandommap`: random offsets may repeat before every block is touched.
    pub norandommap: bool,
    /// `randrepeat`: the same random sequence every run (default true).
    pub randrepeat: bool,
    /// `randseed`.
    pub randseed: Option<u64>,
    /// `random_distribution`.
    pub random_distribution: Distribution,
    /// `rate_iops` for reads (0: unlimited).
    pub rate_iops_read: u64,
    /// `rate_iops` for writes (0: unlimited).
    pub rate_iops_write: u64,
    /// `cpus_allowed`: cores this job may run on.
    pub cpus_allowed: Option<Vec<usize>>,
    /// `group_reporting`.
    pub group_reporting: bool,
    /// `thread` (accepted: pollux-perf jobs are always threads on reactors).
    pub thread: bool,
    /// `verify`.
    pub verify: VerifyKind,
    /// `verify_pattern` bytes (for `verify=pattern`).
    pub verify_pattern: Vec<u8>,
    /// `do_verify` (default true): verify after the write phase.
    pub do_verify: bool,
    /// `verify_fatal`: stop at the first verify error.
    pub verify_fatal: bool,
    /// `verify_backlog`: verify after this many writes rather than at the end.
    pub verify_backlog: u64,
    /// `io_timeout` (a Pollux option, SPDK's bdev_nvme `timeout_us` with
    /// `action_on_timeout` abort): an NVMe-oF I/O outstanding this long is aborted
    /// with the Abort command.
    pub io_timeout: Option<Duration>,
    /// `fsync`: flush after every this many writes (0: never).
    pub fsync: u64,
    /// `verify_state_save`: when the job ends, save the writes acknowledged before a
    /// completed flush (`local-<name>-<n>-verify.state`). Off by default: fio's default
    /// is on, but fio writes the file only when a job is cut short.
    pub verify_state_save: bool,
    /// `verify_state_load`: take the blocks to verify from that file.
    pub verify_state_load: bool,
    /// `verify_only`: issue no writes, only the verify reads.
    pub verify_only: bool,
    /// `filename` (uring: file or device; null/malloc: ignored).
    pub filename: Option<String>,
    /// `direct` (O_DIRECT for uring).
    pub direct: bool,
    /// `percentile_list` (percent values; default fio's list).
    pub percentile_list: Vec<f64>,
    /// `write_lat_log` prefix.
    pub write_lat_log: Option<String>,
    /// `write_iops_log` prefix.
    pub write_iops_log: Option<String>,
    /// `log_avg_msec` (0: one entry per I/O).
    pub log_avg_msec: u64,
    /// `ioengine`.
    pub ioengine: IoEngine,
    /// The ioengine as written (for the report, e.g. "io_uring").
    pub ioengine_name: String,
    /// `target`: SPDK's transport ID string for `nvmf` (`trtype:tcp traddr:... trsvcid:...
    /// subnqn:... ns:1`).
    pub target: Option<String>,
    /// `stonewall` / `new_group`: this job starts a new reporting group.
    pub new_group: bool,
    /// The options as given, in order (fio's `job options` in JSON).
    pub options: Vec<(String, String)>,
}

/// fio's default `percentile_list`.
pub const DEFAULT_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            name: String::new(),
            rw: RwMode::Read,
            rwmixread: 50,
            bs_read: BlockSizes::default(),
            bs_write: BlockSizes::default(),
            iodepth: 1,
            iodepth_batch_submit: 1,
            iodepth_batch_complete_min: 1,
            numjobs: 1,
            size: None,
            offset: 0,
            io_size: None,
            runtime: None,
            time_based: false,
            ramp_time: Duration::ZERO,
            startdelay: Duration::ZERO,
            norandommap: false,
            randrepeat: true,
            randseed: None,
            random_distribution: Distribution::Random,
            rate_iops_read: 0,
            rate_iops_write: 0,
            cpus_allowed: None,
            group_reporting: false,
            thread: false,
            verify: VerifyKind::None,
            verify_pattern: Vec::new(),
            do_verify: true,
            verify_fatal: false,
            verify_backlog: 0,
            io_timeout: None,
            fsync: 0,
            verify_state_save: false,
            verify_state_load: false,
            verify_only: false,
            filename: None,
            direct: false,
            percentile_list: DEFAULT_PERCENTILES.to_vec(),
            write_lat_log: None,
            write_iops_log: None,
            log_avg_msec: 0,
            ioengine: IoEngine::Null,
            ioengine_name: "null".into(),
            target: None,
            new_group: false,
            options: Vec::new(),
        }
    }
}

/// Everything one invocation asks for.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RunSpec {
    /// The jobs, in order (numjobs clones are expanded by the runner).
    pub jobs: Vec<JobSpec>,
    /// `--output`: write the report here instead of stdout.
    pub output: Option<String>,
    /// `--output-format` (default normal).
    pub formats: Vec<OutputFormat>,
    /// `--plot <file.svg>`.
    pub plot: Option<String>,
    /// `--eta=never|always|auto` (auto: a status line on a terminal).
    pub eta: Option<String>,
    /// Core mask for the reactors (`-m`, SPDK style); default: every core jobs name.
    pub core_mask: Option<String>,
}

/// Summary of latencies in nanoseconds, with percentiles (fio's `clat_ns` object).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LatSummary {
    /// Smallest.
    pub min: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Samples.
    pub n: u64,
    /// (percent, value in ns) for each requested percentile; empty for slat/lat.
    pub percentiles: Vec<(f64, u64)>,
    /// For json+: (bucket value in ns, count) of non-empty buckets.
    pub bins: Vec<(u64, u64)>,
}

/// What one direction of one job did (fio's `read` / `write` / `trim` objects).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DirResult {
    /// Bytes transferred.
    pub io_bytes: u64,
    /// I/Os completed.
    pub total_ios: u64,
    /// Short I/Os.
    pub short_ios: u64,
    /// Dropped I/Os.
    pub drop_ios: u64,
    /// Time spent in this direction, in ms (the job's measured runtime).
    pub runtime_ms: u64,
    /// Submission latency.
    pub slat: LatSummary,
    /// Completion latency (with percentiles).
    pub clat: LatSummary,
    /// Total latency.
    pub lat: LatSummary,
    /// Bandwidth samples (KiB/s, one per `log_avg_msec` or per 500 ms as fio's default).
    pub bw_samples: Vec<f64>,
    /// IOPS samples, same period.
    pub iops_samples: Vec<f64>,
}

impl DirResult {
    /// IOPS over the runtime.
    pub fn iops(&self) -> f64 {
        if self.runtime_ms == 0 {
            0.0
        } else {
            self.total_ios as f64 * 1000.0 / self.runtime_ms as f64
        }
    }
    /// Bytes per second over the runtime.
    pub fn bw_bytes(&self) -> f64 {
        if self.runtime_ms == 0 {
            0.0
        } else {
            self.io_bytes as f64 * 1000.0 / self.runtime_ms as f64
        }
    }
}

/// What one job (one clone, or a group under `group_reporting`) measured.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct JobResult {
    /// `jobname`.
    pub name: String,
    /// Reporting group.
    pub groupid: u32,
    /// Verify or I/O errors seen.
    pub error: u32,
    /// The first error's text, if any.
    pub error_text: Option<String>,
    /// Wall time the job ran, ms (ramp included).
    pub elapsed_ms: u64,
    /// Per direction: read, write, trim.
    pub dirs: [DirResult; 3],
    /// User CPU %, system CPU % of the job's thread(s) over the run.
    pub usr_cpu: f64,
    /// System CPU %.
    pub sys_cpu: f64,
    /// Context switches.
    pub ctx: u64,
    /// Major faults.
    pub majf: u64,
    /// Minor faults.
    pub minf: u64,
    /// I/O depth distribution at submission: % of submissions seen with depth in
    /// fio's buckets 1, 2, 4, 8, 16, 32, >=64.
    pub iodepth_level: [f64; 7],
    /// % of submit calls that submitted 0, 1-4, 5-8, 9-16, 17-32, 33-64, >64 I/Os.
    pub iodepth_submit: [f64; 7],
    /// The same for completion reaps.
    pub iodepth_complete: [f64; 7],
    /// Issued I/Os per direction (rwts): total, short, dropped.
    pub issued: [u64; 3],
    /// Latency distribution in percent: ns buckets 2,4,10,20,50,100,250,500,750,1000.
    pub latency_ns: [f64; 10],
    /// us buckets 2,4,10,20,50,100,250,500,750,1000.
    pub latency_us: [f64; 10],
    /// ms buckets 2,4,10,20,50,100,250,500,750,1000,2000,>=2000.
    pub latency_ms: [f64; 12],
    /// The job's options (for JSON `job options`).
    pub options: Vec<(String, String)>,
    /// The job's iodepth (for the report header line).
    pub iodepth: u32,
    /// The job's rw (for the header line).
    pub rw: RwMode,
    /// Block sizes (for the header line).
    pub bs_read: BlockSizes,
    /// Block sizes for writes.
    pub bs_write: BlockSizes,
    /// ioengine name (for the header line).
    pub ioengine_name: String,
    /// Percentile list used.
    pub percentile_list: Vec<f64>,
    /// How many jobs (clones) this result sums under `group_reporting`: fio's
    /// `jobs=` in the report (0 reads as 1).
    pub members: u32,
}
