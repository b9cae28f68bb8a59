//! fio's options, from the command line and from fio job files, into a [`RunSpec`].
//!
//! The semantics follow fio 3.33:
//!
//! - **Command line.** `--name=<job>` starts a job; options before the first `--name`
//!   (or after `--name=global`) are defaults for the jobs that follow and for the jobs
//!   of the first job file. Later `--opt=val` apply to the current job. `--opt val`
//!   works for options that take a value (as fio's getopt); flags (`--time_based`,
//!   `--direct`, ...) never take the next argument. `-opt=val` with one dash works too.
//!   Arguments that are not options are job files; command-line jobs run first, then
//!   the files' jobs in order.
//! - **Job files.** INI: `[global]` sets defaults for the jobs that *follow* it (a
//!   later `[global]` adds to them, for the jobs after it); every other section is a
//!   job named after the section (unless `name=` says otherwise). As fio, a section
//!   whose name starts with `global` is a global one. `;` and `#` start a comment
//!   anywhere on a line. `include <file>` inside a section pulls the file's options in
//!   (relative to the including file's directory, then the current directory).
//!   `${VAR}` expands to the environment variable (empty when unset), and fio's
//!   keywords `$pagesize`, `$ncpus` and `$mb_memory` to their values; `$VAR` (no
//!   braces) expands when `VAR` is set, a pollux-perf extension (fio leaves it).
//!   Each job file after the first starts from fio's defaults again (command-line
//!   defaults and earlier files' `[global]`s do not apply) and its first job starts a
//!   new reporting group (fio's stonewall between job files).
//! - **Values.** Sizes use fio's `kb_base=1024`: `4k` = 4096, `1g` = 2^30, `1ki` =
//!   1000, hex as `0x1000`; times are seconds unless suffixed `us`, `ms`, `s`, `m`,
//!   `h`, `d`; booleans are `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off` or the bare
//!   name for true. Per-direction values (`bs=4k,64k`) are `read,write[,trim]`; one
//!   value applies to every direction and an empty part keeps the current value.
//!   `bssplit` wins over `bsrange`, which wins over `bs`, whatever their order (fio).
//!
//! Every option pollux-perf does not implement is refused with a message naming it;
//! [`help_text`] lists the supported ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::{
    BlockSizes, Distribution, IoEngine, JobSpec, OutputFormat, RunSpec, RwMode, VerifyKind,
};

/// A command-line or job-file error; the message names the option (and, for job
/// files, the file and line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptError(pub String);

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// Run these jobs.
    Run(RunSpec),
    /// Print this text (`--help`) and exit.
    Help(String),
    /// Print the version (`--version`) and exit.
    Version,
}

/// How an option takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arity {
    /// A boolean: bare means true; on the command line it never takes the next
    /// argument.
    Flag,
    /// Needs a value (`--opt=val` or `--opt val`).
    Value,
    /// A string that may be left out (`write_lat_log` alone: the job's name).
    Optional,
}

/// One supported job option.
#[derive(Debug)]
struct OptDef {
    /// fio's canonical name.
    name: &'static str,
    /// Other names fio accepts.
    aliases: &'static [&'static str],
    arity: Arity,
    /// The value's shape, for the help.
    arg: &'static str,
    /// One line for the help.
    help: &'static str,
}

const fn opt(
    name: &'static str,
    aliases: &'static [&'static str],
    arity: Arity,
    arg: &'static str,
    help: &'static str,
) -> OptDef {
    OptDef {
        name,
        aliases,
        arity,
        arg,
        help,
    }
}

use Arity::{Flag, Optional, Value};

/// The job options pollux-perf implements, in the order the help lists them.
#[rustfmt::skip]
const JOB_OPTIONS: &[OptDef] = &[
    opt("name", &[], Value, "str", "job name; on the command line, starts a new job"),
    opt("description", &[], Value, "str", "free text, kept in the JSON report only"),
    opt("ioengine", &[], Value, "str",
        "null, malloc: in-memory bdev of size; io_uring: filename; nvmf: target (default null)"),
    opt("target", &[], Value, "trid",
        "pollux: SPDK transport ID for nvmf ('trtype:tcp|rdma traddr:... trsvcid:... subnqn:... ns:1')"),
    opt("filename", &[], Value, "path", "file or block device for the io_uring engines"),
    opt("direct", &[], Flag, "bool", "O_DIRECT for the io_uring engines (default 0)"),
    opt("buffered", &[], Flag, "bool", "the opposite of direct (default 1)"),
    opt("fixedbufs", &[], Flag, "bool", "io_uring: registered buffers (pollux-perf always registers them)"),
    opt("registerfiles", &[], Flag, "bool", "io_uring: registered files (pollux-perf always registers them)"),
    opt("rw", &["readwrite"], Value, "str",
        "read | write | randread | randwrite | rw | randrw (default read)"),
    opt("rwmixread", &[], Value, "int", "percent of reads in a mixed workload (default 50)"),
    opt("rwmixwrite", &[], Value, "int", "percent of writes in a mixed workload (sets rwmixread = 100 - it)"),
    opt("bs", &["blocksize"], Value, "int[,int]", "block size, or read,write block sizes (default 4k)"),
    opt("bsrange", &["blocksize_range"], Value, "lo-hi[,lo-hi]",
        "block sizes from lo to hi in multiples of lo, per direction"),
    opt("bssplit", &[], Value, "bs/pct:...[,...]", "weighted block sizes, e.g. 4k/50:64k/50, per direction"),
    opt("size", &[], Value, "int", "bytes of the region the job uses (null/malloc: the bdev's size)"),
    opt("offset", &["fileoffset"], Value, "int", "where the region starts, in bytes"),
    opt("io_size", &["io_limit"], Value, "int", "bytes to transfer before stopping (default size)"),
    opt("iodepth", &[], Value, "int", "I/Os kept in flight (default 1)"),
    opt("iodepth_batch", &["iodepth_batch_submit"], Value, "int", "I/Os submitted in one go (default 1)"),
    opt("iodepth_batch_complete_min", &["iodepth_batch_complete"], Value, "int",
        "fewest completions reaped in one go (default 1)"),
    opt("numjobs", &[], Value, "int", "clones of this job (default 1)"),
    opt("runtime", &["timeout"], Value, "time", "stop after this long (seconds unless suffixed)"),
    opt("time_based", &[], Flag, "bool", "run for the whole runtime, looping over the region"),
    opt("ramp_time", &[], Value, "time", "run this long before measuring"),
    opt("startdelay", &[], Value, "time", "wait this long before starting the job"),
    opt("norandommap", &[], Flag, "bool", "random offsets may repeat before every block is touched"),
    opt("randrepeat", &[], Flag, "bool", "the same random sequence every run (default 1)"),
    opt("randseed", &[], Value, "int", "seed of the random generators"),
    opt("random_distribution", &[], Value, "str", "random | zipf[:theta] | pareto[:h] | normal[:dev%]"),
    opt("rate_iops", &[], Value, "int[,int]", "IOPS cap, or read,write caps (0: none)"),
    opt("cpus_allowed", &[], Value, "list", "cores the job may run on, e.g. 0-1,3"),
    opt("thread", &[], Flag, "bool", "accepted: pollux-perf jobs are always threads"),
    opt("group_reporting", &[], Flag, "bool", "report a group's jobs together"),
    opt("stonewall", &["wait_for_previous"], Flag, "bool",
        "wait for the jobs before this one and start a new reporting group"),
    opt("new_group", &[], Flag, "bool", "start a new reporting group"),
    opt("verify", &[], Value, "str", "0 | crc32c | crc32c-intel | md5 | pattern: check what was written"),
    opt("verify_pattern", &[], Value, "pattern", "fill pattern: 0xhex, decimal or \"string\", concatenated"),
    opt("do_verify", &[], Flag, "bool", "verify after the write phase (default 1)"),
    opt("verify_fatal", &[], Flag, "bool", "stop the job at the first verify error"),
    opt("verify_backlog", &[], Value, "int", "verify after every this many writes"),
    opt("fsync", &[], Value, "int", "flush (NVMe Flush, fdatasync) after every this many writes"),
    opt("io_timeout", &[], Value, "time",
        "nvmf: abort (Abort command) an I/O outstanding this long (a Pollux option; 0: never)"),
    opt("verify_state_save", &[], Flag, "bool",
        "save the writes acknowledged before a completed flush to local-<name>-<n>-verify.state"),
    opt("verify_state_load", &[], Flag, "bool", "load the writes to verify from that state file"),
    opt("verify_only", &[], Flag, "bool", "write nothing: only verify (with verify_state_load)"),
    opt("percentile_list", &[], Value, "float:...", "completion latency percentiles, e.g. 50:99:99.9"),
    opt("write_lat_log", &[], Optional, "prefix", "write <prefix>_{lat,clat,slat}.N.log (default prefix: the job's name)"),
    opt("write_iops_log", &[], Optional, "prefix", "write <prefix>_iops.N.log (default prefix: the job's name)"),
    opt("log_avg_msec", &[], Value, "int", "average log entries over this many ms (0: one per I/O)"),
];

/// Options that change nothing for pollux-perf with exactly these values, because they
/// are what it does anyway.
const NOOP_VALUES: &[(&str, &[&str])] = &[
    ("kb_base", &["1024"]),
    ("clat_percentiles", &["1"]),
    ("disk_util", &["0"]),
];

/// fio 3.33's job options (and the io_uring/libaio engine options) that pollux-perf
/// refuses because it does not implement what they do.
#[rustfmt::skip]
const FIO_UNSUPPORTED: &[&str] = &[
    "allow_file_create", "allow_mounted_write", "allrandrepeat", "atomic", "ba",
    "block_error_percentiles", "blockalign", "blocksize_unaligned", "bs_is_seq_rand",
    "bs_unaligned", "buffer_compress_chunk", "buffer_compress_percentage", "buffer_pattern",
    "bwavgtime", "cgroup", "cgroup_nodelete", "cgroup_weight", "clat_percentiles", "clocksource",
    "cmd_type", "cmdprio", "cmdprio_bssplit", "cmdprio_class", "cmdprio_percentage",
    "continue_on_error", "cpumask", "cpus_allowed_policy", "create_fsync", "create_on_open",
    "create_only", "create_serialize", "dedupe_global", "dedupe_mode", "dedupe_percentage",
    "dedupe_working_set_percentage", "directory", "disable_bw", "disable_bw_measurement",
    "disable_clat", "disable_lat", "disable_slat", "disk_util", "end_fsync", "error_dump",
    "exec_postrun", "exec_prerun", "exit_what", "exitall", "exitall_on_error",
    "experimental_verify", "fadvise_hint", "fallocate", "fdatasync", "file_append",
    "file_service_type", "filename_format", "filesize", "fill_device", "fill_fs", "flow",
    "flow_id", "flow_sleep", "force_async", "fsync_on_close", "gid", "gtod_cpu",
    "gtod_reduce", "hipri", "hipri_percentage", "hugepage-size", "ignore_error",
    "ignore_zone_limits", "invalidate", "io_submit_mode", "iodepth_batch_complete_max",
    "iodepth_low", "iopsavgtime", "ioscheduler", "job_max_open_zones", "kb_base",
    "lat_percentiles", "latency_percentile", "latency_run", "latency_target", "latency_window",
    "lockfile", "lockmem", "log_alternate_epoch", "log_alternate_epoch_clock_id",
    "log_compression", "log_compression_cpus", "log_entries", "log_hist_coarseness",
    "log_hist_msec", "log_max_value", "log_offset", "log_prio", "log_store_compressed",
    "log_unix_epoch", "loops", "max_latency", "max_open_zones", "mem", "merge_blktrace_file",
    "merge_blktrace_iters", "merge_blktrace_scalars", "nice", "nonvectored", "nowait", "nrfiles",
    "numa_cpu_nodes", "numa_mem_policy", "number_ios", "offset_align", "offset_increment",
    "opendir", "openfiles", "overwrite", "per_job_logs", "percentage_random", "pre_read", "prio",
    "prioclass", "profile", "random_generator", "rate", "rate_cycle", "rate_ignore_thinktime",
    "rate_iops_min", "rate_min", "rate_process", "read_beyond_wp", "read_iolog",
    "read_iolog_chunked", "readfua", "refill_buffers", "replay_align", "replay_no_stall",
    "replay_redirect", "replay_scale", "replay_skip", "replay_time_scale", "rw_sequencer",
    "scramble_buffers", "serialize_overlap", "sg_write_mode", "significant_figures",
    "slat_percentiles", "softrandommap", "sqthread_poll", "sqthread_poll_cpu", "ss", "ss_dur",
    "ss_ramp", "stats", "steadystate", "steadystate_duration", "steadystate_ramp_time", "sync",
    "sync_file_range", "thinktime", "thinktime_blocks", "thinktime_blocks_type",
    "thinktime_iotime", "thinktime_spin", "trim_backlog", "trim_backlog_batch", "trim_percentage",
    "trim_verify_zero", "uid", "uncached", "unified_rw_reporting", "unique_filename", "unit_base",
    "unlink", "unlink_each_loop", "userspace_reap", "verify_async", "verify_async_cpus",
    "verify_backlog_batch", "verify_dump", "verify_interval", "verify_offset", "wait_for",
    "write_barrier", "write_bw_log",
    "write_hint", "write_hist_log", "write_iolog", "writefua", "zero_buffers",
    "zone_reset_frequency", "zone_reset_threshold", "zonecapacity", "zonemode", "zonerange",
    "zonesize", "zoneskip",
];

/// A hint for a few refused options that have a supported neighbour.
fn unsupported_hint(name: &str) -> &'static str {
    match name {
        "rate" | "rate_min" | "rate_iops_min" => " (rate_iops is)",
        "cpumask" => " (cpus_allowed is)",
        "write_bw_log" => " (write_iops_log and write_lat_log are)",
        "blockalign" | "ba" => " (offsets are aligned to the block size)",
        "loops" => " (time_based with runtime repeats the workload)",
        _ => "",
    }
}

/// fio's program options that pollux-perf does not have.
#[rustfmt::skip]
const FIO_PROGRAM_UNSUPPORTED: &[&str] = &[
    "alloc-size", "append-terse", "aux-path", "bandwidth-log", "client", "cmdhelp",
    "cpuclock-test", "crctest", "daemonize", "debug", "enghelp", "eta-interval", "eta-newline",
    "idle-prof", "inflate-log", "latency-log", "max-jobs", "memcpytest", "merge-blktrace-only",
    "parse-only", "readonly", "remote-config", "section", "server", "showcmd", "status-interval",
    "terse-version", "trigger", "trigger-file", "trigger-remote", "trigger-timeout",
    "warnings-fatal",
];

/// fio's I/O engines that pollux-perf does not drive.
#[rustfmt::skip]
const FIO_ENGINES_UNSUPPORTED: &[&str] = &[
    "cpuio", "mmap", "net", "netsplice", "ftruncate", "filecreate", "filestat", "filedelete",
    "exec", "falloc", "e4defrag", "splice", "gfapi", "gfapi_async", "mtd", "sg", "io_uring_cmd",
    "nbd", "rdma", "rados", "rbd", "pmemblk", "dev-dax", "libpmem", "http", "libhdfs", "nfs",
    "windowsaio", "solarisaio", "xnvme", "libcufile", "dfs", "guasi", "binject", "syslet-rw",
];

/// The engines that go through the io_uring bdev.
const URING_ENGINES: &[&str] = &[
    "io_uring", "uring", "libaio", "psync", "sync", "pvsync", "pvsync2", "vsync", "posixaio",
];

/// Program options: (name, short, takes a value, argument, help).
const PROGRAM_OPTIONS: &[(&str, Option<char>, bool, &str, &str)] = &[
    (
        "output",
        None,
        true,
        "file",
        "write the report to this file instead of stdout",
    ),
    (
        "output-format",
        None,
        true,
        "fmt[,fmt]",
        "normal | json | json+ | terse (default normal)",
    ),
    (
        "minimal",
        None,
        false,
        "",
        "the same as --output-format=terse",
    ),
    (
        "eta",
        None,
        true,
        "when",
        "always | never | auto: the status line while running (default auto)",
    ),
    (
        "plot",
        None,
        true,
        "file.svg",
        "draw IOPS and latency over time into an SVG file",
    ),
    (
        "reactor-mask",
        Some('m'),
        true,
        "mask",
        "pollux: reactor cores, SPDK style (0x3, [0,1]); default: the jobs' cores",
    ),
    ("help", Some('h'), false, "", "print this help"),
    ("version", Some('v'), false, "", "print the version"),
];

fn find_job_option(key: &str) -> Option<&'static OptDef> {
    JOB_OPTIONS
        .iter()
        .find(|d| d.name == key || d.aliases.contains(&key))
}

/// The error for an option that is not among the supported ones.
fn not_supported(key: &str) -> String {
    if FIO_UNSUPPORTED.contains(&key) || FIO_PROGRAM_UNSUPPORTED.contains(&key) {
        format!(
            "option \"{key}\" is not supported by pollux-perf{}",
            unsupported_hint(key)
        )
    } else {
        format!("unknown option \"{key}\" (pollux-perf --help lists the supported options)")
    }
}

/// The list of every supported option, each with a one-line meaning.
pub fn help_text() -> String {
    let mut s = String::new();
    s.push_str(
        "pollux-perf: a fio-compatible load generator on Pollux's reactors\n\n\
         Usage: pollux-perf [options] [--name=<job> [job options]]... [job files]...\n\n\
         Job options given before the first --name are defaults for every job that\n\
         follows (and for the first job file's jobs). Job files use fio's format:\n\
         [global] and [<job>] sections of key=value lines.\n\nProgram options:\n",
    );
    for (name, short, value, arg, help) in PROGRAM_OPTIONS {
        let mut left = match short {
            Some(c) => format!("-{c}, --{name}"),
            None => format!("    --{name}"),
        };
        if *value {
            left.push_str(&format!("=<{arg}>"));
        }
        push_help_line(&mut s, &left, help);
    }
    s.push_str("\nJob options (--opt=value on the command line, opt=value in job files):\n");
    for d in JOB_OPTIONS {
        let mut left = format!("  --{}", d.name);
        match d.arity {
            Arity::Flag => left.push_str(&format!("[={}]", d.arg)),
            Arity::Value => left.push_str(&format!("=<{}>", d.arg)),
            Arity::Optional => left.push_str(&format!("[=<{}>]", d.arg)),
        }
        let mut help = d.help.to_string();
        if !d.aliases.is_empty() {
            help.push_str(&format!("; alias {}", d.aliases.join(", ")));
        }
        push_help_line(&mut s, &left, &help);
    }
    s.push_str(
        "\nThe engines libaio, psync, sync, pvsync, pvsync2, vsync, posixaio and uring mean io_uring.\n\
         Sizes: 4k = 4096, 1m = 2^20, 1g = 2^30 (fio's kb_base=1024). Times: seconds, or\n\
         suffixed us, ms, s, m, h, d. Booleans: 1/0, true/false, yes/no, on/off, or the bare\n\
         name for true. Accepted with no effect: kb_base=1024, clat_percentiles=1,\n\
         disk_util=0. Any other fio option is refused with a message naming it.\n",
    );
    s
}

fn push_help_line(s: &mut String, left: &str, help: &str) {
    const COL: usize = 34;
    if left.len() + 2 <= COL {
        s.push_str(&format!("{left:<COL$}{help}\n"));
    } else {
        s.push_str(&format!("{left}\n{:COL$}{help}\n", ""));
    }
}

// ---------------------------------------------------------------------------------
// One job's options.

/// A job (or the global defaults) while options are applied to it; fio's `thread_data`
/// before `add_job`. Cloned for each job that inherits it.
#[derive(Clone, Debug)]
struct Builder {
    spec: JobSpec,
    /// `name=`, when given (else the section's name).
    name: Option<String>,
    /// `bs`, `bsrange`, `bssplit` per direction (read, write); resolved in [`Builder::finish`]:
    /// bssplit over bsrange over bs, as fio.
    bs: [Option<u64>; 2],
    bsrange: [Option<(u64, u64)>; 2],
    bssplit: [Option<Vec<(u64, u32)>>; 2],
    /// `verify` was given (`verify_pattern` alone implies `verify=pattern`).
    verify_set: bool,
    stonewall: bool,
    new_group: bool,
    /// io_uring engine options given (checked against the ioengine at the end).
    uring_opts: Vec<&'static str>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            spec: JobSpec::default(),
            name: None,
            bs: [None; 2],
            bsrange: [None; 2],
            bssplit: [None, None],
            verify_set: false,
            stonewall: false,
            new_group: false,
            uring_opts: Vec::new(),
        }
    }

    /// Applies one option (`value` empty: given bare). Errors name the option.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        let Some(def) = find_job_option(key) else {
            let noop = NOOP_VALUES.iter().find(|(k, _)| *k == key);
            if noop.is_some_and(|(_, ok)| ok.contains(&value)) {
                self.record(key, value);
                return Ok(());
            }
            return Err(not_supported(key));
        };
        if def.arity == Arity::Value && value.is_empty() {
            return Err(format!("option \"{key}\" needs a value"));
        }
        let bad = |why: String| format!("invalid value \"{value}\" for {key}: {why}");
        let s = &mut self.spec;
        match def.name {
            "name" => self.name = Some(value.to_string()),
            "description" => {}
            "ioengine" => {
                s.ioengine = parse_engine(value).map_err(bad)?;
                s.ioengine_name = value.to_string();
            }
            "target" => s.target = Some(value.to_string()),
            "filename" => s.filename = Some(parse_filename(value).map_err(bad)?),
            "direct" => s.direct = parse_bool(value).map_err(bad)?,
            "buffered" => s.direct = !parse_bool(value).map_err(bad)?,
            "fixedbufs" | "registerfiles" => {
                if !parse_bool(value).map_err(bad)? {
                    return Err(format!(
                        "{key}=0 is not supported by pollux-perf: it always registers its buffers and files"
                    ));
                }
                if !self.uring_opts.contains(&def.name) {
                    self.uring_opts.push(def.name);
                }
            }
            "rw" => s.rw = parse_rw(value).map_err(bad)?,
            "rwmixread" => s.rwmixread = parse_percent(value).map_err(bad)?,
            "rwmixwrite" => s.rwmixread = 100 - parse_percent(value).map_err(bad)?,
            "bs" => {
                let v = per_dir(value, parse_bs).map_err(bad)?;
                apply_dirs(&mut self.bs, v);
            }
            "bsrange" => {
                let v = per_dir(value, parse_bsrange).map_err(bad)?;
                apply_dirs(&mut self.bsrange, v);
            }
            "bssplit" => {
                let v = per_dir(value, parse_bssplit).map_err(bad)?;
                apply_dirs(&mut self.bssplit, v);
            }
            "size" => {
                let v = parse_size(value).map_err(bad)?;
                if v == 0 {
                    return Err(bad("must be greater than 0".into()));
                }
                s.size = Some(v);
            }
            "offset" => s.offset = parse_size(value).map_err(bad)?,
            "io_size" => {
                let v = parse_size(value).map_err(bad)?;
                if v == 0 {
                    return Err(bad("must be greater than 0".into()));
                }
                s.io_size = Some(v);
            }
            "iodepth" => {
                s.iodepth = parse_u32(value).map_err(bad)?;
                if s.iodepth == 0 {
                    return Err(bad("iodepth must be at least 1".into()));
                }
            }
            "iodepth_batch" => s.iodepth_batch_submit = parse_u32(value).map_err(bad)?,
            "iodepth_batch_complete_min" => {
                s.iodepth_batch_complete_min = parse_u32(value).map_err(bad)?
            }
            "numjobs" => {
                s.numjobs = parse_u32(value).map_err(bad)?;
                if s.numjobs == 0 {
                    return Err(bad("numjobs must be at least 1".into()));
                }
            }
            "runtime" => {
                let t = parse_time(value).map_err(bad)?;
                s.runtime = (!t.is_zero()).then_some(t);
            }
            "time_based" => s.time_based = parse_bool(value).map_err(bad)?,
            "ramp_time" => s.ramp_time = parse_time(value).map_err(bad)?,
            "startdelay" => {
                if value.contains(':') || value.get(1..).is_some_and(|r| r.contains('-')) {
                    return Err(bad(
                        "a range of start delays is not supported by pollux-perf".into(),
                    ));
                }
                s.startdelay = parse_time(value).map_err(bad)?
            }
            "norandommap" => s.norandommap = parse_bool(value).map_err(bad)?,
            "randrepeat" => s.randrepeat = parse_bool(value).map_err(bad)?,
            "randseed" => s.randseed = Some(parse_u64_plain(value).map_err(bad)?),
            "random_distribution" => {
                s.random_distribution = parse_distribution(value).map_err(bad)?
            }
            "rate_iops" => {
                let mut r = [Some(s.rate_iops_read), Some(s.rate_iops_write)];
                apply_dirs(&mut r, per_dir(value, parse_size).map_err(bad)?);
                s.rate_iops_read = r[0].unwrap_or(0);
                s.rate_iops_write = r[1].unwrap_or(0);
            }
            "cpus_allowed" => s.cpus_allowed = Some(parse_cpus(value).map_err(bad)?),
            "thread" => s.thread = parse_bool(value).map_err(bad)?,
            "group_reporting" => s.group_reporting = parse_bool(value).map_err(bad)?,
            "stonewall" => self.stonewall = parse_bool(value).map_err(bad)?,
            "new_group" => self.new_group = parse_bool(value).map_err(bad)?,
            "verify" => {
                s.verify = parse_verify(value).map_err(bad)?;
                self.verify_set = true;
            }
            "verify_pattern" => s.verify_pattern = parse_pattern(value).map_err(bad)?,
            "do_verify" => s.do_verify = parse_bool(value).map_err(bad)?,
            "verify_fatal" => s.verify_fatal = parse_bool(value).map_err(bad)?,
            "verify_backlog" => s.verify_backlog = parse_size(value).map_err(bad)?,
            "fsync" => s.fsync = parse_size(value).map_err(bad)?,
            "io_timeout" => {
                s.io_timeout = Some(parse_time(value).map_err(bad)?).filter(|d| !d.is_zero())
            }
            "verify_state_save" => s.verify_state_save = parse_bool(value).map_err(bad)?,
            "verify_state_load" => s.verify_state_load = parse_bool(value).map_err(bad)?,
            "verify_only" => s.verify_only = parse_bool(value).map_err(bad)?,
            "percentile_list" => s.percentile_list = parse_percentiles(value).map_err(bad)?,
            // An empty prefix means the job's name, settled in `finish`.
            "write_lat_log" => s.write_lat_log = Some(value.to_string()),
            "write_iops_log" => s.write_iops_log = Some(value.to_string()),
            "log_avg_msec" => s.log_avg_msec = parse_size(value).map_err(bad)?,
            other => unreachable!("option table entry {other} without a handler"),
        }
        self.record(def.name, value);
        Ok(())
    }

    /// A copy without `name=`, for a job that takes its section's name.
    fn without_name(&self) -> Builder {
        let mut b = self.clone();
        b.name = None;
        b.spec.options.retain(|(k, _)| k != "name");
        b
    }

    /// Keeps the option for the report: one entry per option, the latest value, in the
    /// order they were last given.
    fn record(&mut self, key: &str, value: &str) {
        self.spec.options.retain(|(k, _)| k != key);
        self.spec.options.push((key.to_string(), value.to_string()));
    }

    /// The finished job, checked. `section` names it unless `name=` did.
    fn finish(self, section: &str) -> Result<JobSpec, String> {
        let mut s = self.spec;
        s.name = self.name.unwrap_or_else(|| section.to_string());
        if s.name.is_empty() {
            return Err("a job needs a name".into());
        }
        let job = s.name.clone();
        let err = move |msg: String| format!("job \"{job}\": {msg}");
        let mut sizes = [BlockSizes::default(), BlockSizes::default()];
        for (d, out) in sizes.iter_mut().enumerate() {
            *out = if let Some(v) = &self.bssplit[d] {
                BlockSizes::Split(v.clone())
            } else if let Some((min, max)) = self.bsrange[d] {
                BlockSizes::Range { min, max }
            } else {
                BlockSizes::Fixed(self.bs[d].unwrap_or(4096))
            };
        }
        let [r, w] = sizes;
        s.bs_read = r;
        s.bs_write = w;
        if s.write_lat_log.as_deref() == Some("") {
            s.write_lat_log = Some(s.name.clone());
        }
        if s.write_iops_log.as_deref() == Some("") {
            s.write_iops_log = Some(s.name.clone());
        }
        if !self.verify_set && !s.verify_pattern.is_empty() {
            // As fio: a pattern without `verify` verifies the pattern.
            s.verify = VerifyKind::Pattern;
        }
        if s.verify == VerifyKind::Pattern && s.verify_pattern.is_empty() {
            return Err(err("verify=pattern needs verify_pattern".into()));
        }
        if s.io_timeout.is_some() && s.ioengine != IoEngine::Nvmf {
            return Err(err("io_timeout is for ioengine=nvmf".into()));
        }
        if s.verify_only && !s.verify_state_load {
            return Err(err(
                "verify_only needs verify_state_load=1: the blocks to verify come from the state file".into(),
            ));
        }
        if (s.verify_state_save || s.verify_state_load) && s.verify == VerifyKind::None {
            return Err(err(
                "verify_state_save and verify_state_load need verify".into()
            ));
        }
        s.new_group = s.new_group || self.stonewall || self.new_group;
        // fio: a batch larger than the depth submits the whole depth.
        if s.iodepth_batch_submit > s.iodepth {
            s.iodepth_batch_submit = s.iodepth;
        }
        if s.iodepth_batch_complete_min > s.iodepth {
            return Err(err(format!(
                "iodepth_batch_complete_min ({}) is larger than iodepth ({})",
                s.iodepth_batch_complete_min, s.iodepth
            )));
        }
        if s.time_based && s.runtime.is_none() {
            return Err(err("time_based needs runtime".into()));
        }
        match s.ioengine {
            IoEngine::Nvmf if s.target.is_none() => {
                return Err(err(
                    "ioengine=nvmf needs target (SPDK's transport ID string, e.g. \
                     --target='trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:...')"
                        .into(),
                ));
            }
            IoEngine::Nvme if s.target.is_none() => {
                return Err(err(
                    "ioengine=nvme needs target: --target='trtype:pcie traddr:0000:00:04.0' \
                     (the controller bound to vfio-pci: pollux-setup bind 0000:00:04.0)"
                        .into(),
                ));
            }
            IoEngine::Uring if s.filename.is_none() => {
                return Err(err(format!(
                    "ioengine={} needs filename (a file or block device)",
                    s.ioengine_name
                )));
            }
            IoEngine::Null | IoEngine::Malloc if s.size.is_none() => {
                return Err(err(format!(
                    "ioengine={} needs size (the in-memory device's size)",
                    s.ioengine_name
                )));
            }
            _ => {}
        }
        let on_uring = matches!(s.ioengine_name.as_str(), "io_uring" | "uring");
        if let Some(o) = self.uring_opts.first().filter(|_| !on_uring) {
            return Err(err(format!(
                "{o} is an option of ioengine=io_uring (this job's ioengine is {})",
                s.ioengine_name
            )));
        }
        let max_bs = s.bs_read.max().max(s.bs_write.max());
        if let Some(size) = s.size.filter(|&size| size < max_bs) {
            return Err(err(format!(
                "size ({size}) is smaller than the block size ({max_bs})"
            )));
        }
        if s.offset % 512 != 0 {
            return Err(err(format!(
                "offset ({}) must be a multiple of 512",
                s.offset
            )));
        }
        Ok(s)
    }
}

/// Sets each direction a per-direction option gave a value for.
fn apply_dirs<T>(slots: &mut [Option<T>; 2], values: [Option<T>; 2]) {
    for (slot, v) in slots.iter_mut().zip(values) {
        if v.is_some() {
            *slot = v;
        }
    }
}

/// fio's `read,write,trim` values: one value is for every direction; an empty part
/// leaves that direction as it was. The trim part is checked, then dropped (pollux-perf
/// never trims).
fn per_dir<T>(
    value: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<[Option<T>; 2], String> {
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    if parts.len() > 3 {
        return Err("at most three comma-separated values (read,write,trim)".into());
    }
    if parts.len() == 1 {
        return Ok([Some(parse(parts[0])?), Some(parse(parts[0])?)]);
    }
    let one = |p: &str| -> Result<Option<T>, String> {
        if p.is_empty() {
            Ok(None)
        } else {
            parse(p).map(Some)
        }
    };
    if let Some(t) = parts.get(2) {
        one(t)?;
    }
    Ok([one(parts[0])?, one(parts[1])?])
}

// ---------------------------------------------------------------------------------
// Values.

/// A byte count with fio's suffixes (kb_base=1024: `k`/`kb` = 1024, `ki`/`kib` = 1000).
fn parse_size(v: &str) -> Result<u64, String> {
    let t = v.trim();
    if t.is_empty() {
        return Err("empty".into());
    }
    if t.ends_with('%') {
        return Err(
            "a percentage of the device is not supported by pollux-perf; give a size in bytes (k, m, g, t suffixes)"
                .into(),
        );
    }
    if t.starts_with('(') {
        return Err("arithmetic expressions are not supported by pollux-perf".into());
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| "not a hexadecimal number".into());
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err("not a number".into());
    }
    if suffix.starts_with('.') {
        return Err("fractions are not supported; use a smaller unit".into());
    }
    let n: u64 = num.parse().map_err(|_| "too large".to_string())?;
    let mult: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        "p" | "pb" => 1 << 50,
        "ki" | "kib" => 1_000,
        "mi" | "mib" => 1_000_000,
        "gi" | "gib" => 1_000_000_000,
        "ti" | "tib" => 1_000_000_000_000,
        "pi" | "pib" => 1_000_000_000_000_000,
        "z" => return Err("sizes in zones are not supported by pollux-perf".into()),
        _ => {
            return Err(format!(
                "unknown unit \"{suffix}\" (k, m, g, t, p: 4k = 4096; ki, mi, ...: 4ki = 4000)"
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| "too large".into())
}

fn parse_u32(v: &str) -> Result<u32, String> {
    u32::try_from(parse_size(v)?).map_err(|_| "too large".into())
}

/// A plain integer, decimal or 0x hex, no unit.
fn parse_u64_plain(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| "not a number".into())
}

/// A percentage, 0 to 100.
fn parse_percent(v: &str) -> Result<u32, String> {
    let p: u32 = v.trim().parse().map_err(|_| "not a number".to_string())?;
    if p > 100 {
        return Err("must be from 0 to 100".into());
    }
    Ok(p)
}

/// A time: seconds unless suffixed (fio's `time` type).
fn parse_time(v: &str) -> Result<Duration, String> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err("not a number".into());
    }
    if suffix.starts_with('.') {
        return Err("fractions are not supported; use a smaller unit (ms, us)".into());
    }
    let n: u64 = num.parse().map_err(|_| "too large".to_string())?;
    let secs = |m: u64| {
        n.checked_mul(m)
            .map(Duration::from_secs)
            .ok_or_else(|| "too large".to_string())
    };
    match suffix.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" => secs(1),
        "ms" | "msec" => Ok(Duration::from_millis(n)),
        "us" | "usec" => Ok(Duration::from_micros(n)),
        "m" | "min" => secs(60),
        "h" | "hour" => secs(3600),
        "d" | "day" => secs(86400),
        _ => Err(format!(
            "unknown time unit \"{suffix}\" (us, ms, s, m, h, d; seconds without one)"
        )),
    }
}

/// A boolean; empty (the bare option) is true.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not a boolean (1/0, true/false, yes/no, on/off)".into()),
    }
}

/// One block size: positive and a multiple of 512.
fn parse_bs(v: &str) -> Result<u64, String> {
    let b = parse_size(v)?;
    if b == 0 || b % 512 != 0 {
        return Err(format!("block size {b} is not a positive multiple of 512"));
    }
    Ok(b)
}

/// `lo-hi` (or `lo:hi`); swapped when backwards, as fio.
fn parse_bsrange(v: &str) -> Result<(u64, u64), String> {
    let (a, b) = v
        .split_once(['-', ':'])
        .ok_or_else(|| "not a range like 4k-64k".to_string())?;
    let (a, b) = (parse_bs(a)?, parse_bs(b)?);
    Ok((a.min(b), a.max(b)))
}

/// `bs/pct:bs/pct...` for one direction; entries without a percentage (or with 0)
/// share what is left, so the result adds up to 100.
fn parse_bssplit(v: &str) -> Result<Vec<(u64, u32)>, String> {
    let mut out: Vec<(u64, Option<u32>)> = Vec::new();
    for part in v.split(':') {
        let part = part.trim();
        if part.is_empty() {
            return Err("an empty entry".into());
        }
        let (bs, pct) = match part.split_once('/') {
            Some((b, p)) if p.trim().is_empty() => (b, None),
            Some((b, p)) => {
                let p: u32 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("percentage \"{p}\" is not a number"))?;
                (b, (p != 0).then_some(p))
            }
            None => (part, None),
        };
        out.push((parse_bs(bs)?, pct));
    }
    let given: u32 = out.iter().filter_map(|x| x.1).sum();
    let missing = out.iter().filter(|x| x.1.is_none()).count() as u32;
    if given > 100 {
        return Err(format!("the percentages add up to {given}, more than 100"));
    }
    if missing == 0 && given != 100 {
        return Err(format!("the percentages add up to {given}, not 100"));
    }
    let left = 100 - given;
    let mut extra = if missing > 0 { left % missing } else { 0 };
    Ok(out
        .into_iter()
        .map(|(b, p)| {
            let p = p.unwrap_or_else(|| {
                let share = left / missing + u32::from(extra > 0);
                extra = extra.saturating_sub(1);
                share
            });
            (b, p)
        })
        .collect())
}

fn parse_rw(v: &str) -> Result<RwMode, String> {
    if let Some((mode, suffix)) = v.split_once(':') {
        parse_rw(mode)?;
        return Err(format!(
            "the \":{suffix}\" suffix (fio's offset modifier) is not supported by pollux-perf"
        ));
    }
    Ok(match v {
        "read" => RwMode::Read,
        "write" => RwMode::Write,
        "randread" => RwMode::RandRead,
        "randwrite" => RwMode::RandWrite,
        "rw" | "readwrite" => RwMode::ReadWrite,
        "randrw" => RwMode::RandRw,
        "trim" | "randtrim" | "trimwrite" | "randtrimwrite" => {
            return Err("trims are not supported by pollux-perf".into());
        }
        _ => {
            return Err(
                "expected read, write, randread, randwrite, rw, readwrite or randrw".into(),
            );
        }
    })
}

fn parse_engine(v: &str) -> Result<IoEngine, String> {
    Ok(match v {
        "null" => IoEngine::Null,
        "malloc" => IoEngine::Malloc,
        "nvmf" => IoEngine::Nvmf,
        "nvme" => IoEngine::Nvme,
        _ if URING_ENGINES.contains(&v) => IoEngine::Uring,
        "spdk" | "spdk_bdev" | "spdk_nvme" => {
            return Err(
                "SPDK's fio plugins are not needed: use ioengine=nvmf with target=<SPDK transport ID>"
                    .into(),
            );
        }
        _ if FIO_ENGINES_UNSUPPORTED.contains(&v) || v.starts_with("external:") => {
            return Err(format!("ioengine {v} is not supported by pollux-perf"));
        }
        _ => {
            return Err(format!(
                "unknown ioengine (null, malloc, nvmf, or {})",
                URING_ENGINES.join(", ")
            ));
        }
    })
}

fn parse_verify(v: &str) -> Result<VerifyKind, String> {
    Ok(match v {
        "0" => VerifyKind::None,
        "crc32c" | "crc32c-intel" => VerifyKind::Crc32c,
        "md5" => VerifyKind::Md5,
        "pattern" => VerifyKind::Pattern,
        "crc64" | "crc32" | "crc16" | "crc7" | "sha1" | "sha256" | "sha512" | "sha3-224"
        | "sha3-256" | "sha3-384" | "sha3-512" | "xxhash" | "meta" | "null" => {
            return Err(format!(
                "verify={v} is not supported by pollux-perf (0, crc32c, crc32c-intel, md5, pattern are)"
            ));
        }
        _ => return Err("expected 0, crc32c, crc32c-intel, md5 or pattern".into()),
    })
}

fn parse_distribution(v: &str) -> Result<Distribution, String> {
    let mut it = v.split(':');
    let kind = it.next().unwrap_or_default().trim();
    let params: Vec<&str> = it.map(str::trim).collect();
    let num = || -> Result<Option<f64>, String> {
        match params.as_slice() {
            [] => Ok(None),
            [p] => p
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| format!("\"{p}\" is not a number")),
            _ => Err(format!(
                "{kind}: a second value (the distribution's center) is not supported by pollux-perf"
            )),
        }
    };
    match kind {
        "random" if params.is_empty() => Ok(Distribution::Random),
        "random" => Err("random takes no value".into()),
        "zipf" => {
            let t = num()?.unwrap_or(1.1);
            if t <= 0.0 || t == 1.0 {
                return Err("zipf theta must be greater than 0 and not 1".into());
            }
            Ok(Distribution::Zipf(t))
        }
        "pareto" => {
            let h = num()?.unwrap_or(0.2);
            if h <= 0.0 || h >= 1.0 {
                return Err("pareto h must be between 0 and 1 (exclusive)".into());
            }
            Ok(Distribution::Pareto(h))
        }
        "normal" => {
            let d = num()?.unwrap_or(0.0);
            if !(0.0..100.0).contains(&d) {
                return Err("normal deviation must be from 0 to less than 100".into());
            }
            Ok(Distribution::Normal(d))
        }
        "zoned" | "zoned_abs" => Err(format!(
            "random_distribution={kind} is not supported by pollux-perf"
        )),
        _ => Err("expected random, zipf[:theta], pareto[:h] or normal[:dev]".into()),
    }
}

/// `0-1,3` style CPU lists, sorted, without repeats.
fn parse_cpus(v: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in v.split(',').map(str::trim) {
        let num = |s: &str| -> Result<usize, String> {
            s.trim()
                .parse()
                .map_err(|_| format!("\"{s}\" is not a CPU number"))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if a > b {
            return Err(format!("the range {part} runs backwards"));
        }
        if b >= 4096 {
            return Err(format!("CPU {b} is out of range"));
        }
        cpus.extend(a..=b);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// `50:99:99.9`: each in (0, 100], at most 20 (fio's limit).
fn parse_percentiles(v: &str) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for p in v.split(':').map(str::trim) {
        let x: f64 = p.parse().map_err(|_| format!("\"{p}\" is not a number"))?;
        if !(x > 0.0 && x <= 100.0) {
            return Err(format!("{p} is not in (0, 100]"));
        }
        out.push(x);
    }
    if out.len() > 20 {
        return Err("at most 20 percentiles".into());
    }
    Ok(out)
}

/// One file (fio's `a:b` lists several; `\:` is a colon in a name).
fn parse_filename(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                out.push(':');
                chars.next();
            }
            ':' => {
                return Err(
                    "several files per job are not supported by pollux-perf (write \\: for a colon in a name)"
                        .into(),
                );
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// fio's buffer pattern: `0x` hex bytes (in the order written), decimal numbers (as
/// their little-endian bytes, `-1024` = `00 fc ff ff`) and `"strings"`, concatenated.
fn parse_pattern(v: &str) -> Result<Vec<u8>, String> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = v[i + 1..]
                    .find('"')
                    .ok_or_else(|| "a string without its closing quote".to_string())?;
                let s = &b[i + 1..i + 1 + end];
                if s.is_empty() {
                    return Err("an empty string".into());
                }
                out.extend_from_slice(s);
                i += end + 2;
            }
            b'%' => return Err("formats (%o) are not supported by pollux-perf".into()),
            b'\'' => {
                return Err("patterns read from files are not supported by pollux-perf".into());
            }
            b'0' if matches!(b.get(i + 1), Some(b'x' | b'X')) => {
                let start = i + 2;
                let mut end = start;
                while end < b.len() && b[end].is_ascii_hexdigit() {
                    end += 1;
                }
                // `0xff0x14` is two numbers: a trailing 0 starts the next one.
                if end > start + 1 && b[end - 1] == b'0' && matches!(b.get(end), Some(b'x' | b'X'))
                {
                    end -= 1;
                }
                let digits = &v[start..end];
                if digits.is_empty() {
                    return Err("0x without hex digits".into());
                }
                // An odd count: the first digit is a byte of its own.
                let first = digits.len() % 2;
                if first == 1 {
                    out.push(u8::from_str_radix(&digits[..1], 16).expect("hex digit"));
                }
                for k in (first..digits.len()).step_by(2) {
                    out.push(u8::from_str_radix(&digits[k..k + 2], 16).expect("hex digits"));
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut end = i + 1;
                while end < b.len()
                    && b[end].is_ascii_digit()
                    && !(b[end] == b'0' && matches!(b.get(end + 1), Some(b'x' | b'X')))
                {
                    end += 1;
                }
                let n: i64 = v[start..end]
                    .parse()
                    .map_err(|_| format!("\"{}\" is not a number", &v[start..end]))?;
                let n = i32::try_from(n)
                    .map_err(|_| "decimal numbers must fit in 32 bits (use 0x for more)")?;
                let mut u = n as u32;
                if u == 0 {
                    out.push(0);
                }
                while u != 0 {
                    out.push(u as u8);
                    u >>= 8;
                }
                i = end;
            }
            _ => {
                return Err(format!(
                    "unexpected \"{}\" (0x hex, decimal or \"string\" parts)",
                    &v[i..]
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("empty".into());
    }
    Ok(out)
}

fn parse_formats(v: &str) -> Result<Vec<OutputFormat>, String> {
    let mut out = Vec::new();
    for f in v.split(',').map(str::trim) {
        let f = match f {
            "normal" => OutputFormat::Normal,
            "json" => OutputFormat::Json,
            "json+" => OutputFormat::JsonPlus,
            "terse" | "minimal" | "csv" => OutputFormat::Terse,
            _ => {
                return Err(format!(
                    "invalid value \"{f}\" for --output-format: expected normal, json, json+ or terse"
                ));
            }
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    // json+ is json with the histogram: one JSON report.
    if out.contains(&OutputFormat::JsonPlus) {
        out.retain(|f| *f != OutputFormat::Json);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Job files.

/// One option line of a job file.
#[derive(Clone, Debug)]
struct Line {
    key: String,
    value: String,
    /// `file:line`, for messages.
    at: String,
}

/// One `[section]`.
#[derive(Clone, Debug)]
struct Section {
    name: String,
    lines: Vec<Line>,
}

/// A job file's sections: (section name, its (key, value) options in order).
pub type JobFileSections = Vec<(String, Vec<(String, String)>)>;

/// Reads a fio job file into its sections, in order, each with its options as
/// `(key, value)` (value empty for a bare key): comments dropped, `include`s resolved,
/// environment variables expanded. `[global]` sections are among them, by name.
pub fn parse_job_file(path: &Path) -> Result<JobFileSections, OptError> {
    Ok(read_job_file(path, &real_env)?
        .into_iter()
        .map(|s| {
            let opts = s.lines.into_iter().map(|l| (l.key, l.value)).collect();
            (s.name, opts)
        })
        .collect())
}

/// Looks up an environment variable (the process's, or a test's).
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn real_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read_job_file(path: &Path, env: Env<'_>) -> Result<Vec<Section>, OptError> {
    let mut sections = Vec::new();
    read_lines(path, 0, &mut sections, env)?;
    Ok(sections)
}

/// Reads `path`'s lines into `sections`; `depth` > 0 for an included file, which adds
/// to the last section and may not open new ones (as fio).
fn read_lines(
    path: &Path,
    depth: usize,
    sections: &mut Vec<Section>,
    env: Env<'_>,
) -> Result<(), OptError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| OptError(format!("cannot read job file {}: {e}", path.display())))?;
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), n + 1);
        let fail = |msg: String| OptError(format!("{at}: {msg}"));
        // As fio: `;` or `#` anywhere starts a comment.
        let line = raw.split([';', '#']).next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if depth > 0 {
                return Err(fail("an included file may not start sections".into()));
            }
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| fail(format!("section header \"{line}\" lacks its ]")))?
                .trim();
            if name.is_empty() {
                return Err(fail("a section without a name".into()));
            }
            sections.push(Section {
                name: name.to_string(),
                lines: Vec::new(),
            });
            continue;
        }
        if sections.is_empty() {
            return Err(fail(format!("option \"{line}\" outside of a [section]")));
        }
        if let Some(file) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with(char::is_whitespace))
        {
            if depth >= 16 {
                return Err(fail("includes nest too deep (a cycle?)".into()));
            }
            let file = file.trim();
            let inc = resolve_include(path, file)
                .ok_or_else(|| fail(format!("cannot find include file {file}")))?;
            read_lines(&inc, depth + 1, sections, env)?;
            continue;
        }
        let line = expand_vars(line, env);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line.trim(), ""),
        };
        if key.is_empty() {
            return Err(fail(format!("\"{line}\" has no option name")));
        }
        let section = sections.last_mut().expect("checked above");
        section.lines.push(Line {
            key: key.to_string(),
            value: value.to_string(),
            at,
        });
    }
    Ok(())
}

/// An include's path: as is when absolute, else next to the including file, else
/// from the current directory (fio's own choice).
fn resolve_include(from: &Path, file: &str) -> Option<PathBuf> {
    let p = Path::new(file);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    let beside = from.parent().map(|d| d.join(p)).filter(|q| q.exists());
    beside.or_else(|| p.exists().then(|| p.to_path_buf()))
}

/// `${VAR}` (empty when unset), fio's `$pagesize`, `$ncpus`, `$mb_memory`, and `$VAR`
/// when set.
fn expand_vars(s: &str, env: Env<'_>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('$') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let braced = after
            .strip_prefix('{')
            .and_then(|inner| Some(inner.split_at(inner.find('}').filter(|&e| e > 0)?)));
        if let Some((name, tail)) = braced {
            out.push_str(&env(name).unwrap_or_default());
            rest = &tail[1..];
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..len];
        let value = match name {
            "" => None,
            "pagesize" => Some(page_size().to_string()),
            "ncpus" => Some(online_cpus().to_string()),
            "mb_memory" => Some(memory_mb().to_string()),
            _ if name.starts_with(|c: char| c.is_ascii_digit()) => None,
            _ => env(name),
        };
        match value {
            Some(v) => out.push_str(&v),
            None => {
                out.push('$');
                out.push_str(name);
            }
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

fn page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("KernelPageSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb * 1024)
}

fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpus(t.trim()).ok())
        .map(|v| v.len())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// The jobs of one job file. `global` holds the defaults it starts from; `stonewall`
/// puts its first job in a new group (a job file after the first).
fn jobs_of_file(
    path: &Path,
    mut global: Builder,
    stonewall: bool,
    env: Env<'_>,
) -> Result<Vec<JobSpec>, OptError> {
    let mut jobs = Vec::new();
    for section in read_job_file(path, env)? {
        let is_global = section.name.starts_with("global");
        // As fio: a global `name=` does not rename the jobs; their sections do.
        let mut job = (!is_global).then(|| global.without_name());
        let target = job.as_mut().unwrap_or(&mut global);
        for l in &section.lines {
            target
                .set(&l.key, &l.value)
                .map_err(|e| OptError(format!("{}: {e}", l.at)))?;
        }
        let Some(mut b) = job else { continue };
        if stonewall && jobs.is_empty() {
            b.spec.new_group = true;
        }
        let spec = b
            .finish(&section.name)
            .map_err(|e| OptError(format!("{}: {e}", path.display())))?;
        jobs.push(spec);
    }
    Ok(jobs)
}

// ---------------------------------------------------------------------------------
// The command line.

/// Parses pollux-perf's command line (without the program name) the way fio does.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, OptError> {
    let args: Vec<String> = args.into_iter().collect();
    parse_args_env(&args, &real_env)
}

fn parse_args_env(args: &[String], env: Env<'_>) -> Result<Parsed, OptError> {
    let mut run = RunSpec::default();
    let mut global = Builder::new();
    // The current command-line job; None while options are global.
    let mut current: Option<Builder> = None;
    let mut cl_jobs: Vec<Builder> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let mut formats: Option<Vec<OutputFormat>> = None;
    let mut only_files = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_files || arg == "-" || !arg.starts_with('-') {
            files.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_files = true;
            continue;
        }
        let long = arg.strip_prefix("--");
        let body = long.unwrap_or(&arg[1..]);
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let is_long_name = |n: &str| {
            find_job_option(n).is_some()
                || PROGRAM_OPTIONS.iter().any(|p| p.0 == n)
                || NOOP_VALUES.iter().any(|p| p.0 == n)
                || FIO_UNSUPPORTED.contains(&n)
                || FIO_PROGRAM_UNSUPPORTED.contains(&n)
        };
        // One dash: a long option (fio's getopt_long_only) or -m, -h, -v.
        let name: String = if long.is_none() && !is_long_name(name) {
            let mut cs = body.chars();
            match (cs.next(), cs.as_str()) {
                (Some('h'), "") => "help".into(),
                (Some('v'), "") => "version".into(),
                (Some('m'), rest) => {
                    let v = rest.strip_prefix('=').unwrap_or(rest);
                    let v = if v.is_empty() {
                        take_value(args, &mut i, "-m")?
                    } else {
                        v.to_string()
                    };
                    set_reactor_mask(&mut run, &v)?;
                    continue;
                }
                _ => return Err(OptError(not_supported(arg))),
            }
        } else {
            name.to_string()
        };
        if let Some(p) = PROGRAM_OPTIONS.iter().find(|p| p.0 == name) {
            let value = if p.2 {
                match inline {
                    Some(v) if !v.is_empty() => v.to_string(),
                    Some(_) => return Err(OptError(format!("option \"--{name}\" needs a value"))),
                    None => take_value(args, &mut i, &format!("--{name}"))?,
                }
            } else {
                if let Some(v) = inline {
                    return Err(OptError(format!(
                        "option \"--{name}\" takes no value (got \"{v}\")"
                    )));
                }
                String::new()
            };
            match name.as_str() {
                "help" => return Ok(Parsed::Help(help_text())),
                "version" => return Ok(Parsed::Version),
                "output" => run.output = Some(value),
                "output-format" => formats = Some(parse_formats(&value).map_err(OptError)?),
                "minimal" => formats = Some(vec![OutputFormat::Terse]),
                "eta" => match value.as_str() {
                    "always" | "never" | "auto" => run.eta = Some(value),
                    _ => {
                        return Err(OptError(format!(
                            "invalid value \"{value}\" for --eta: expected always, never or auto"
                        )));
                    }
                },
                "plot" => run.plot = Some(value),
                "reactor-mask" => set_reactor_mask(&mut run, &value)?,
                other => unreachable!("program option {other} without a handler"),
            }
            continue;
        }
        let value = match (find_job_option(&name).map(|d| d.arity), inline) {
            (_, Some(v)) => v.to_string(),
            (Some(Arity::Value), None) => take_value(args, &mut i, &format!("--{name}"))?,
            (_, None) => String::new(),
        };
        if find_job_option(&name).is_some_and(|d| d.name == "name") {
            if let Some(job) = current.take() {
                cl_jobs.push(job);
            }
            if value.starts_with("global") {
                continue;
            }
            current = Some(global.clone());
        }
        current
            .as_mut()
            .unwrap_or(&mut global)
            .set(&name, &value)
            .map_err(OptError)?;
    }
    cl_jobs.extend(current);
    for b in cl_jobs {
        run.jobs.push(b.finish("").map_err(OptError)?);
    }
    if files.iter().any(|f| f == "-") {
        return Err(OptError(
            "reading a job file from standard input (-) is not supported by pollux-perf; give its path"
                .into(),
        ));
    }
    for (n, f) in files.iter().enumerate() {
        let base = if n == 0 {
            global.clone()
        } else {
            Builder::new()
        };
        run.jobs
            .extend(jobs_of_file(Path::new(f), base, n > 0, env)?);
    }
    if run.jobs.is_empty() {
        return Err(OptError(
            "no jobs: give --name=<job> with its options, or a job file (pollux-perf --help)"
                .into(),
        ));
    }
    run.formats = formats.unwrap_or_else(|| vec![OutputFormat::Normal]);
    Ok(Parsed::Run(run))
}

/// The argument after an option that needs a value.
fn take_value(args: &[String], i: &mut usize, opt: &str) -> Result<String, OptError> {
    match args.get(*i) {
        Some(v) if !v.starts_with("--") => {
            *i += 1;
            Ok(v.clone())
        }
        _ => Err(OptError(format!("option \"{opt}\" needs a value"))),
    }
}

fn set_reactor_mask(run: &mut RunSpec, mask: &str) -> Result<(), OptError> {
    pollux_engine::reactor::parse_core_mask(mask)
        .map_err(|e| OptError(format!("invalid value \"{mask}\" for --reactor-mask: {e}")))?;
    run.core_mask = Some(mask.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jobs")
    }

    /// The variables the job files use, for fio and for the parser.
    const TEST_ENV: &[(&str, &str)] =
        &[("POLLUX_TEST_SIZE", "2m"), ("POLLUX_TEST_RW", "randwrite")];

    fn test_env(name: &str) -> Option<String> {
        TEST_ENV
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn run_of(a: &[&str]) -> RunSpec {
        match parse_args_env(&args(a), &test_env) {
            Ok(Parsed::Run(r)) => r,
            other => panic!("{a:?}: {other:?}"),
        }
    }

    fn jobs(a: &[&str]) -> Vec<JobSpec> {
        run_of(a).jobs
    }

    fn err_of(a: &[&str]) -> String {
        match parse_args_env(&args(a), &test_env) {
            Err(e) => e.0,
            Ok(r) => panic!("{a:?} parsed: {r:?}"),
        }
    }

    fn file_jobs(name: &str) -> Vec<JobSpec> {
        let p = jobs_dir().join(name);
        jobs(&[p.to_str().unwrap()])
    }

    fn by_name<'a>(jobs: &'a [JobSpec], name: &str) -> &'a JobSpec {
        jobs.iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    /// A job file with this text, kept alive with its directory.
    fn temp_job(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.fio");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    fn temp_err(text: &str) -> String {
        let (_d, p) = temp_job(text);
        err_of(&[p.to_str().unwrap()])
    }

    fn fio_files() -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(jobs_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "fio"))
            .collect();
        v.sort();
        v
    }

    /// fio itself accepts every job file that uses only fio's options (the pollux-*.fio
    /// ones use pollux's engines and `target`).
    #[test]
    fn fio_accepts_the_job_files() {
        let files: Vec<PathBuf> = fio_files()
            .into_iter()
            .filter(|p| {
                !p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("pollux-")
            })
            .collect();
        assert!(files.len() >= 6);
        for f in files {
            let out = std::process::Command::new("fio")
                .arg("--parse-only")
                .arg(&f)
                .envs(TEST_ENV.iter().copied())
                .output()
                .expect("fio is installed (tests/run-all installs it)");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.trim().is_empty(),
                "fio --parse-only {}: {}{stderr}",
                f.display(),
                out.status
            );
        }
    }

    /// Between them, the job files use every supported option.
    #[test]
    fn the_job_files_use_every_option() {
        let mut used = std::collections::HashSet::new();
        for f in fio_files() {
            for (_, opts) in read_job_file(&f, &test_env)
                .unwrap()
                .into_iter()
                .map(|s| (s.name, s.lines))
            {
                for l in opts {
                    let d = find_job_option(&l.key)
                        .unwrap_or_else(|| panic!("{}: {} unknown", l.at, l.key));
                    used.insert(d.name);
                    used.extend(d.aliases.iter().copied().filter(|a| *a == l.key));
                }
            }
        }
        for d in JOB_OPTIONS {
            assert!(used.contains(d.name), "no job file uses {}", d.name);
            for a in d.aliases {
                assert!(used.contains(a), "no job file uses the alias {a}");
            }
        }
    }

    #[test]
    fn basic_file() {
        let j = file_jobs("basic.fio");
        assert_eq!(j.len(), 2);
        let r = &j[0];
        assert_eq!(r.name, "seqread");
        assert_eq!(r.rw, RwMode::Read);
        assert_eq!(r.ioengine, IoEngine::Null);
        assert_eq!(r.ioengine_name, "null");
        assert_eq!(r.size, Some(64 << 20));
        assert_eq!(r.bs_read, BlockSizes::Fixed(8192));
        assert_eq!(r.bs_write, BlockSizes::Fixed(8192));
        assert_eq!(r.iodepth, 16);
        assert_eq!(r.runtime, Some(Duration::from_secs(10)));
        assert!(r.time_based && r.group_reporting && r.thread);
        assert_eq!(r.ramp_time, Duration::from_millis(500));
        assert_eq!(r.numjobs, 1);
        assert!(!r.new_group);
        let w = &j[1];
        assert_eq!(w.name, "rw4");
        assert_eq!(w.rw, RwMode::RandWrite);
        assert_eq!(w.numjobs, 4);
        assert_eq!(w.startdelay, Duration::from_secs(2));
        assert_eq!(w.runtime, Some(Duration::from_secs(60)));
        // Global options first, then the job's, one entry per option, canonical names.
        assert_eq!(
            w.options
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            [
                "description",
                "ioengine",
                "size",
                "bs",
                "iodepth",
                "time_based",
                "ramp_time",
                "group_reporting",
                "thread",
                "name",
                "rw",
                "numjobs",
                "startdelay",
                "runtime"
            ]
        );
        assert!(w.options.contains(&("bs".into(), "8k".into())));
        assert!(w.options.contains(&("time_based".into(), "".into())));
        assert!(w.options.contains(&("runtime".into(), "1m".into())));
    }

    #[test]
    fn mixed_file() {
        let j = file_jobs("mixed.fio");
        assert_eq!(j.len(), 4);
        let z = by_name(&j, "zipf");
        assert_eq!(z.rw, RwMode::RandRw);
        assert_eq!(z.rwmixread, 70);
        assert_eq!(z.bs_read, BlockSizes::Fixed(4096));
        assert_eq!(z.bs_write, BlockSizes::Fixed(65536));
        assert_eq!(z.iodepth, 32);
        assert_eq!(z.iodepth_batch_submit, 8);
        assert_eq!(z.iodepth_batch_complete_min, 4);
        assert!(!z.randrepeat && z.norandommap);
        assert_eq!(z.randseed, Some(1234));
        assert_eq!(z.percentile_list, [50.0, 99.0, 99.9]);
        assert_eq!(z.cpus_allowed, Some(vec![0, 1]));
        assert_eq!(z.random_distribution, Distribution::Zipf(1.2));
        assert_eq!((z.rate_iops_read, z.rate_iops_write), (1000, 500));
        assert_eq!(z.offset, 1 << 20);
        assert_eq!(z.io_size, Some(256 << 20));
        assert_eq!(z.size, Some(1 << 30));
        assert!(!z.new_group);
        assert!(z.options.contains(&("rw".into(), "randrw".into())));
        assert!(z.options.contains(&("iodepth_batch".into(), "8".into())));
        assert!(
            z.options
                .contains(&("iodepth_batch_complete_min".into(), "4".into()))
        );

        let p = by_name(&j, "pareto");
        assert_eq!(p.random_distribution, Distribution::Pareto(0.3));
        assert_eq!(
            p.bs_read,
            BlockSizes::Range {
                min: 4096,
                max: 16384
            }
        );
        assert_eq!(
            p.bs_write,
            BlockSizes::Range {
                min: 8192,
                max: 32768
            }
        );
        assert_eq!(p.rwmixread, 80);
        assert!(p.new_group);
        assert_eq!(p.runtime, Some(Duration::from_secs(30)));
        assert!(p.options.contains(&("runtime".into(), "30".into())));

        let n = by_name(&j, "normal");
        assert_eq!(n.random_distribution, Distribution::Normal(5.0));
        assert_eq!(n.bs_read, BlockSizes::Split(vec![(4096, 50), (65536, 50)]));
        assert_eq!(
            n.bs_write,
            BlockSizes::Split(vec![(8192, 90), (131072, 10)])
        );
        assert_eq!(n.io_size, Some(1 << 30));
        assert!(n.new_group);
        assert_eq!(
            (n.iodepth_batch_submit, n.iodepth_batch_complete_min),
            (2, 1)
        );

        // `bs=,16k` keeps the read size and sets writes; `bssplit=...,` sets only reads;
        // bssplit wins over bs, as in fio.
        let b = by_name(&j, "blanks");
        assert_eq!(
            b.bs_read,
            BlockSizes::Split(vec![(4096, 34), (8192, 33), (16384, 33)])
        );
        assert_eq!(b.bs_write, BlockSizes::Fixed(16384));
        assert_eq!((b.rate_iops_read, b.rate_iops_write), (200, 200));
        assert!(b.new_group);
    }

    #[test]
    fn verify_file() {
        let j = file_jobs("verify.fio");
        let crc = by_name(&j, "crc");
        assert_eq!(crc.verify, VerifyKind::Crc32c);
        assert!(crc.verify_fatal && crc.do_verify);
        assert_eq!(crc.verify_backlog, 1024);
        let d = by_name(&j, "durable");
        assert!(d.fsync == 32 && d.verify_state_save && !d.verify_only);
        let d = by_name(&j, "durable-check");
        assert!(d.verify_only && d.verify_state_load);
        let ci = by_name(&j, "crc-intel");
        assert_eq!(ci.verify, VerifyKind::Crc32c);
        assert!(!ci.do_verify);
        assert_eq!(by_name(&j, "md5").verify, VerifyKind::Md5);
        let ph = by_name(&j, "pattern-hex");
        assert_eq!(ph.verify, VerifyKind::Pattern);
        assert_eq!(ph.verify_pattern, [0xde, 0xad, 0xbe, 0xef]);
        let pi = by_name(&j, "pattern-implied");
        assert_eq!(pi.verify, VerifyKind::Pattern);
        assert_eq!(pi.verify_pattern, b"abc\x01\x02");
        let pd = by_name(&j, "pattern-decimal");
        assert_eq!(pd.verify_pattern, [0x00, 0xfc, 0xff, 0xff]);
        // verify=0 given: the pattern only fills buffers.
        let none = by_name(&j, "none");
        assert_eq!(none.verify, VerifyKind::None);
        assert_eq!(none.verify_pattern, [0xff]);
    }

    #[test]
    fn uring_file() {
        let j = file_jobs("uring.fio");
        let u = by_name(&j, "uring");
        assert_eq!(u.ioengine, IoEngine::Uring);
        assert_eq!(u.ioengine_name, "io_uring");
        assert_eq!(
            u.filename.as_deref(),
            Some("/tmp/pollux-perf-options-test.img")
        );
        assert!(u.direct);
        assert_eq!(u.iodepth, 64);
        assert_eq!(u.write_lat_log.as_deref(), Some("lat"));
        // A bare write_iops_log: the job's name is the prefix.
        assert_eq!(u.write_iops_log.as_deref(), Some("uring"));
        assert_eq!(u.log_avg_msec, 1000);
        assert!(u.options.contains(&("fixedbufs".into(), "".into())));
        let l = by_name(&j, "libaio");
        assert_eq!(l.offset, 4096);
        assert_eq!(
            (l.ioengine.clone(), l.ioengine_name.as_str()),
            (IoEngine::Uring, "libaio")
        );
        assert!(!l.direct);
        let p = by_name(&j, "psync");
        assert_eq!(p.ioengine_name, "psync");
        assert_eq!(
            p.bs_read,
            BlockSizes::Range {
                min: 4096,
                max: 8192
            }
        );
        assert_eq!(p.write_lat_log.as_deref(), Some("psync"));
        assert_eq!(p.write_iops_log.as_deref(), Some("psync"));
    }

    /// A `[global]` after jobs applies to the jobs after it only, on top of the earlier
    /// one.
    #[test]
    fn globals_apply_to_the_jobs_after_them() {
        let j = file_jobs("globals.fio");
        let names: Vec<&str> = j.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["first", "second", "third"]);
        assert_eq!(
            (j[0].bs_read.clone(), j[0].iodepth),
            (BlockSizes::Fixed(8192), 1)
        );
        assert_eq!(
            (j[1].bs_read.clone(), j[1].iodepth),
            (BlockSizes::Fixed(16384), 8)
        );
        assert_eq!(
            (j[2].bs_read.clone(), j[2].iodepth),
            (BlockSizes::Fixed(32768), 8)
        );
        assert!(
            j.iter()
                .all(|j| j.size == Some(8 << 20) && j.ioengine == IoEngine::Null)
        );
    }

    #[test]
    fn includes_are_resolved_beside_the_including_file() {
        let j = file_jobs("include.fio");
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].name, "inc-job");
        assert_eq!(j[0].size, Some(4 << 20));
        assert_eq!(j[0].iodepth, 4);
        assert_eq!(j[0].bs_read, BlockSizes::Fixed(16384));
        assert_eq!(j[0].rw, RwMode::RandRead);
        let raw = parse_job_file(&jobs_dir().join("include.fio")).unwrap();
        assert_eq!(raw[0].0, "global");
        assert_eq!(
            raw[0].1,
            [
                ("ioengine".into(), "null".into()),
                ("size".into(), "4m".into())
            ]
        );
        assert_eq!(
            raw[1],
            (
                "inc-job".to_string(),
                vec![
                    ("iodepth".into(), "4".into()),
                    ("bs".into(), "16k".into()),
                    ("rw".into(), "randread".into())
                ]
            )
        );
    }

    #[test]
    fn environment_variables_expand() {
        let j = file_jobs("env.fio");
        assert_eq!(j[0].size, Some(2 << 20));
        assert_eq!(j[0].rw, RwMode::RandWrite);
        assert_eq!(j[0].bs_read, BlockSizes::Fixed(page_size()));
        assert!(
            j[0].options
                .contains(&("description".into(), "unset".into()))
        );
        let e = |s: &str| expand_vars(s, &test_env);
        assert_eq!(e("a${POLLUX_TEST_RW}b"), "arandwriteb");
        assert_eq!(e("$POLLUX_TEST_RW/x"), "randwrite/x");
        assert_eq!(e("${NOPE}x$NOPE"), "x$NOPE");
        assert_eq!(e("$5 $ ${}"), "$5 $ ${}");
        assert_eq!(e("$ncpus"), online_cpus().to_string());
        assert!(memory_mb() > 0);
        // The process's own environment through the public entry.
        assert_eq!(
            expand_vars("${CARGO_MANIFEST_DIR}", &real_env),
            env!("CARGO_MANIFEST_DIR")
        );
    }

    #[test]
    fn pollux_only_file() {
        let j = file_jobs("pollux-nvmf.fio");
        let r = by_name(&j, "remote");
        assert_eq!(r.ioengine, IoEngine::Nvmf);
        assert_eq!(
            r.target.as_deref(),
            Some("trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.pollux:test ns:1")
        );
        assert!(r.time_based);
        assert_eq!(r.io_timeout, Some(Duration::from_secs(2)));
        let m = by_name(&j, "malloc");
        assert_eq!(m.ioengine, IoEngine::Malloc);
        assert_eq!(m.size, Some(64 << 20));
    }

    #[test]
    fn job_file_syntax() {
        let (_d, p) = temp_job(
            "\n  [ spaced ]  ; comment\n\tbs = 8k  \nioengine = null\r\nsize=1m#c\n\n\
             rw =randread;x\n",
        );
        let j = jobs(&[p.to_str().unwrap()]);
        assert_eq!(j[0].name, "spaced");
        assert_eq!(j[0].bs_read, BlockSizes::Fixed(8192));
        assert_eq!(j[0].size, Some(1 << 20));
        assert_eq!(j[0].rw, RwMode::RandRead);
        assert!(
            temp_err("bs=4k\n[x]\n").contains("t.fio:1: option \"bs=4k\" outside of a [section]")
        );
        assert!(temp_err("[x\n").contains("lacks its ]"));
        assert!(
            temp_err("[x]\ninclude nope.inc\n")
                .contains("t.fio:2: cannot find include file nope.inc")
        );
        assert!(
            temp_err("[x]\nioengine=null\nsize=1m\nfoo=1\n")
                .contains("t.fio:4: unknown option \"foo\"")
        );
        let (d, p) = temp_job("[x]\ninclude sub.inc\n");
        std::fs::write(d.path().join("sub.inc"), "[y]\n").unwrap();
        assert!(err_of(&[p.to_str().unwrap()]).contains("may not start sections"));
        let (d, p) = temp_job("[x]\ninclude self.inc\n");
        std::fs::write(d.path().join("self.inc"), "include self.inc\n").unwrap();
        assert!(err_of(&[p.to_str().unwrap()]).contains("nest too deep"));
        assert!(
            err_of(&["/nonexistent/job.fio"]).contains("cannot read job file /nonexistent/job.fio")
        );
        // Validation names the job and file.
        let (_d, p) = temp_job("[global]\nioengine=null\nsize=1m\nname=g\n[a]\n[b]\nname=bn\n");
        let j = jobs(&[p.to_str().unwrap()]);
        assert_eq!((j[0].name.as_str(), j[1].name.as_str()), ("a", "bn"));
        assert!(!j[0].options.iter().any(|(k, _)| k == "name"));
        let e = temp_err("[global]\nioengine=null\n[j]\nrw=read\n");
        assert!(
            e.contains("t.fio: job \"j\": ioengine=null needs size"),
            "{e}"
        );
    }

    #[test]
    fn command_line_jobs_and_globals() {
        let j = jobs(&[
            "--ioengine=null",
            "--size",
            "1m",
            "--name=a",
            "--rw=randread",
            "--bs",
            "8k",
            "--name=b",
            "--iodepth=4",
            "--time_based",
            "--runtime=1m",
            "--direct",
            "-numjobs=2",
        ]);
        assert_eq!(j.len(), 2);
        assert_eq!((j[0].name.as_str(), j[0].rw), ("a", RwMode::RandRead));
        assert_eq!(j[0].bs_read, BlockSizes::Fixed(8192));
        assert_eq!(j[0].size, Some(1 << 20));
        assert_eq!(j[0].iodepth, 1);
        assert_eq!(j[1].name, "b");
        assert_eq!(j[1].bs_read, BlockSizes::Fixed(4096));
        assert_eq!((j[1].iodepth, j[1].numjobs), (4, 2));
        assert!(j[1].time_based && j[1].direct);
        assert_eq!(j[1].size, Some(1 << 20));
        assert_eq!(
            j[0].options,
            [
                ("ioengine".to_string(), "null".to_string()),
                ("size".into(), "1m".into()),
                ("name".into(), "a".into()),
                ("rw".into(), "randread".into()),
                ("bs".into(), "8k".into())
            ]
        );
        // --name=global goes back to the defaults.
        let j = jobs(&[
            "--name=a",
            "--ioengine=null",
            "--size=1m",
            "--name=global",
            "--iodepth=8",
            "--name=b",
            "--ioengine=null",
            "--size=1m",
        ]);
        assert_eq!((j[0].iodepth, j[1].iodepth), (1, 8));
        // Booleans.
        for (v, want) in [
            ("1", true),
            ("yes", true),
            ("on", true),
            ("true", true),
            ("0", false),
            ("off", false),
        ] {
            let j = jobs(&[
                "--ioengine=null",
                "--size=1m",
                "--name=x",
                &format!("--norandommap={v}"),
            ]);
            assert_eq!(j[0].norandommap, want, "{v}");
        }
        let j = jobs(&[
            "--name=x",
            "--ioengine=null",
            "--size=1m",
            "--direct=1",
            "--buffered=1",
        ]);
        assert!(!j[0].direct);
    }

    #[test]
    fn program_options() {
        let r = run_of(&[
            "--output=out.json",
            "--output-format=normal,json,json+",
            "--eta",
            "never",
            "--plot=p.svg",
            "-m",
            "0x3",
            "--name=x",
            "--ioengine=null",
            "--size=1m",
        ]);
        assert_eq!(r.output.as_deref(), Some("out.json"));
        assert_eq!(r.formats, [OutputFormat::Normal, OutputFormat::JsonPlus]);
        assert_eq!(r.eta.as_deref(), Some("never"));
        assert_eq!(r.plot.as_deref(), Some("p.svg"));
        assert_eq!(r.core_mask.as_deref(), Some("0x3"));
        let base = ["--name=x", "--ioengine=null", "--size=1m"];
        let with = |extra: &[&str]| run_of(&[extra, &base[..]].concat());
        assert_eq!(with(&[]).formats, [OutputFormat::Normal]);
        assert_eq!(with(&["--minimal"]).formats, [OutputFormat::Terse]);
        assert_eq!(
            with(&["--output-format=terse,json"]).formats,
            [OutputFormat::Terse, OutputFormat::Json]
        );
        assert_eq!(
            with(&["--reactor-mask=[0,1]"]).core_mask.as_deref(),
            Some("[0,1]")
        );
        assert_eq!(with(&["-m0x1"]).core_mask.as_deref(), Some("0x1"));
        assert!(matches!(parse_args(args(&["--help"])), Ok(Parsed::Help(t)) if t == help_text()));
        assert!(matches!(parse_args(args(&["-h"])), Ok(Parsed::Help(_))));
        assert_eq!(parse_args(args(&["--version"])), Ok(Parsed::Version));
        assert_eq!(parse_args(args(&["-v"])), Ok(Parsed::Version));
        assert!(
            err_of(&["--output-format=xml"]).contains("invalid value \"xml\" for --output-format")
        );
        assert!(err_of(&["--eta=sometimes"]).contains("--eta"));
        assert!(err_of(&["-m", "zz"]).contains("invalid value \"zz\" for --reactor-mask"));
        assert!(err_of(&["--output"]).contains("option \"--output\" needs a value"));
        assert!(err_of(&["--help=1"]).contains("takes no value"));
    }

    /// Command-line defaults reach the first job file; each later file starts afresh
    /// and in a new group (fio's stonewall between job files).
    #[test]
    fn several_job_files() {
        let basic = jobs_dir().join("basic.fio");
        let globals = jobs_dir().join("globals.fio");
        let r = run_of(&[
            basic.to_str().unwrap(),
            "--randseed=7",
            "--name=cl",
            "--ioengine=null",
            "--size=1m",
            globals.to_str().unwrap(),
        ]);
        let names: Vec<&str> = r.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["cl", "seqread", "rw4", "first", "second", "third"]);
        let seeds: Vec<Option<u64>> = r.jobs.iter().map(|j| j.randseed).collect();
        assert_eq!(seeds, [Some(7), Some(7), Some(7), None, None, None]);
        assert!(!r.jobs[1].new_group && r.jobs[3].new_group && !r.jobs[4].new_group);
        assert!(err_of(&["-"]).contains("standard input"));
        // `--` ends the options.
        let j = jobs(&["--", basic.to_str().unwrap()]);
        assert_eq!(j.len(), 2);
    }

    #[test]
    fn unknown_and_unsupported_options() {
        let e = err_of(&["--name=x", "--foo=1"]);
        assert_eq!(
            e,
            "unknown option \"foo\" (pollux-perf --help lists the supported options)"
        );
        assert_eq!(
            err_of(&["--invalidate=1"]),
            "option \"invalidate\" is not supported by pollux-perf"
        );
        assert!(err_of(&["--rate=1m"]).contains("not supported by pollux-perf (rate_iops is)"));
        assert!(err_of(&["--parse-only"]).contains("\"parse-only\" is not supported"));
        assert!(err_of(&["-x"]).contains("unknown option \"-x\""));
        assert!(err_of(&["-mem=malloc"]).contains("option \"mem\" is not supported"));
        assert!(err_of(&["--name=x", "--sqthread_poll"]).contains("not supported"));
        assert!(
            temp_err("[x]\nfsync_on_close=1\n")
                .contains("t.fio:2: option \"fsync_on_close\" is not supported")
        );
        // Accepted because they change nothing, with exactly the value pollux-perf has.
        let j = jobs(&[
            "--kb_base=1024",
            "--name=x",
            "--ioengine=null",
            "--size=1m",
            "--disk_util=0",
        ]);
        assert!(j[0].options.contains(&("disk_util".into(), "0".into())));
        assert!(err_of(&["--kb_base=1000"]).contains("\"kb_base\" is not supported"));
        assert!(
            err_of(&["--name=x", "--ioengine=null", "--size=1m", "--fixedbufs"])
                .contains("fixedbufs is an option of ioengine=io_uring")
        );
        assert!(err_of(&["--fixedbufs=0"]).contains("fixedbufs=0 is not supported"));
        assert!(err_of(&["--name=x", "--bs"]).contains("option \"--bs\" needs a value"));
        assert!(err_of(&["--name=x", "--bs", "--iodepth=2"]).contains("needs a value"));
        assert!(err_of(&["--name=x", "--bs="]).contains("option \"bs\" needs a value"));
        assert!(err_of(&[]).starts_with("no jobs"));
        assert!(err_of(&["--iodepth=2"]).starts_with("no jobs"));
    }

    #[test]
    fn bad_values_name_the_option() {
        let bad = |opt: &str| err_of(&["--name=x", "--ioengine=null", "--size=1m", opt]);
        let e = bad("--bs=4q");
        assert!(
            e.starts_with("invalid value \"4q\" for bs: unknown unit \"q\""),
            "{e}"
        );
        assert!(bad("--size=10%").contains("percentage of the device is not supported"));
        assert!(bad("--bs=1000").contains("not a positive multiple of 512"));
        assert!(bad("--bs=0").contains("for bs"));
        assert!(bad("--bs=4k,8k,16k,32k").contains("at most three"));
        assert!(bad("--blocksize=3000").contains("for blocksize"));
        assert!(bad("--iodepth=0").contains("iodepth must be at least 1"));
        assert!(bad("--numjobs=0").contains("numjobs must be at least 1"));
        assert!(bad("--rwmixread=101").contains("invalid value \"101\" for rwmixread"));
        assert!(bad("--bssplit=4k/50:8k/40").contains("add up to 90, not 100"));
        assert!(bad("--bssplit=4k/60:8k/60").contains("more than 100"));
        assert!(bad("--rw=randread:8").contains("\":8\" suffix"));
        assert!(bad("--rw=trim").contains("trims are not supported"));
        assert!(bad("--rw=sideways").contains("for rw"));
        assert!(bad("--verify=1").contains("invalid value \"1\" for verify"));
        assert!(bad("--verify=sha256").contains("verify=sha256 is not supported"));
        assert!(bad("--ioengine=spdk").contains("use ioengine=nvmf"));
        assert!(bad("--ioengine=spdk_bdev").contains("use ioengine=nvmf"));
        assert!(bad("--ioengine=mmap").contains("ioengine mmap is not supported"));
        assert!(bad("--ioengine=warp").contains("unknown ioengine"));
        assert!(bad("--runtime=5x").contains("unknown time unit"));
        assert!(bad("--runtime=1.5").contains("fractions"));
        assert!(bad("--startdelay=1-5").contains("range of start delays"));
        assert!(bad("--random_distribution=zipf:1").contains("zipf theta"));
        assert!(bad("--random_distribution=pareto:2").contains("pareto"));
        assert!(bad("--random_distribution=normal:100").contains("normal deviation"));
        assert!(bad("--random_distribution=zoned:50/50:50/50").contains("zoned is not supported"));
        assert!(bad("--random_distribution=zipf:1.2:0.5").contains("second value"));
        assert!(bad("--percentile_list=50:0").contains("not in (0, 100]"));
        assert!(bad("--cpus_allowed=3-1").contains("runs backwards"));
        assert!(bad("--cpus_allowed=a").contains("not a CPU number"));
        assert!(bad("--direct=maybe").contains("not a boolean"));
        assert!(bad("--verify_pattern=%o").contains("%o"));
        assert!(bad("--verify_pattern=0xzz").contains("for verify_pattern"));
        assert!(bad("--filename=/a:/b").contains("several files"));
        assert!(bad("--offset=100").contains("multiple of 512"));
        assert!(bad("--size=2k").contains("smaller than the block size"));
        assert!(bad("--randseed=x").contains("for randseed"));
    }

    #[test]
    fn cross_checks() {
        let e = err_of(&["--name=x", "--ioengine=nvmf"]);
        assert!(e.contains("job \"x\": ioengine=nvmf needs target"), "{e}");
        assert!(
            err_of(&["--name=x", "--ioengine=io_uring"])
                .contains("ioengine=io_uring needs filename")
        );
        assert!(err_of(&["--name=x", "--ioengine=malloc"]).contains("ioengine=malloc needs size"));
        assert!(
            err_of(&["--name=x", "--ioengine=null", "--size=1m", "--time_based"])
                .contains("time_based needs runtime")
        );
        assert!(
            err_of(&[
                "--name=x",
                "--ioengine=null",
                "--size=1m",
                "--verify=pattern"
            ])
            .contains("verify=pattern needs verify_pattern")
        );
        assert!(
            err_of(&[
                "--name=x",
                "--ioengine=null",
                "--size=1m",
                "--iodepth_batch_complete_min=4"
            ])
            .contains("larger than iodepth")
        );
        // fio submits at most the depth at once.
        let j = jobs(&[
            "--name=x",
            "--ioengine=null",
            "--size=1m",
            "--iodepth=4",
            "--iodepth_batch=16",
        ]);
        assert_eq!(j[0].iodepth_batch_submit, 4);
        // runtime=0 means no limit; rwmixwrite sets rwmixread.
        let j = jobs(&[
            "--name=x",
            "--ioengine=null",
            "--size=1m",
            "--runtime=0",
            "--rwmixwrite=30",
        ]);
        assert_eq!((j[0].runtime, j[0].rwmixread), (None, 70));
        // filename escapes a colon; target may be given to jobs of other engines.
        let j = jobs(&[
            "--target=trtype:tcp traddr:127.0.0.1 subnqn:x",
            "--name=x",
            "--ioengine=uring",
            "--filename=/dev/disk/by-path/pci-0000\\:00",
        ]);
        assert_eq!(
            j[0].filename.as_deref(),
            Some("/dev/disk/by-path/pci-0000:00")
        );
        assert_eq!(j[0].ioengine, IoEngine::Uring);
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4kb"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4000));
        assert_eq!(parse_size("1ki"), Ok(1000));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("1mi"), Ok(1_000_000));
        assert_eq!(parse_size("512b"), Ok(512));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("16777216t").unwrap_err().contains("too large"));
        assert!(parse_size("k").is_err());
        assert!(parse_size("1z").unwrap_err().contains("zones"));
        assert!(parse_size("(1+2)").unwrap_err().contains("arithmetic"));
        assert_eq!(parse_time("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_time("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_time("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_time("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_time("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_time("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_time("250MSEC"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_time("30us"), Ok(Duration::from_micros(30)));
        assert!(parse_time("-1").is_err());
    }

    #[test]
    fn per_direction_values() {
        let p = |v: &str| per_dir(v, parse_size).unwrap();
        assert_eq!(p("4k"), [Some(4096), Some(4096)]);
        assert_eq!(p("4k,8k"), [Some(4096), Some(8192)]);
        assert_eq!(p(",8k"), [None, Some(8192)]);
        assert_eq!(p("4k,"), [Some(4096), None]);
        assert_eq!(p("4k,8k,16k"), [Some(4096), Some(8192)]);
        assert!(
            per_dir("4k,8k,x", parse_size).is_err(),
            "the trim part is checked"
        );
        assert_eq!(parse_bsrange("16k:4k"), Ok((4096, 16384)));
        assert_eq!(parse_bssplit("4k"), Ok(vec![(4096, 100)]));
        assert_eq!(
            parse_bssplit("4k/0:8k/50"),
            Ok(vec![(4096, 50), (8192, 50)])
        );
        assert_eq!(
            parse_bssplit("4k/10:64k/50:32k/40"),
            Ok(vec![(4096, 10), (65536, 50), (32768, 40)])
        );
        assert_eq!(
            parse_bssplit("4k/50:1k/:32k/"),
            Ok(vec![(4096, 50), (1024, 25), (32768, 25)])
        );
        assert!(
            parse_bssplit("4k/50:1000/50")
                .unwrap_err()
                .contains("multiple of 512")
        );
        assert_eq!(
            parse_bssplit("4k/50:8k:32k/"),
            Ok(vec![(4096, 50), (8192, 25), (32768, 25)])
        );
    }

    /// fio's own examples (lib/pattern.c), less the formats pollux-perf refuses.
    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("\"abcd\""), Ok(b"abcd".to_vec()));
        assert_eq!(parse_pattern("-1024"), Ok(vec![0x00, 0xfc, 0xff, 0xff]));
        assert_eq!(parse_pattern("66"), Ok(vec![0x42]));
        assert_eq!(parse_pattern("0"), Ok(vec![0]));
        assert_eq!(parse_pattern("0xFF0X1"), Ok(vec![0xff, 0x01]));
        assert_eq!(
            parse_pattern("\"123\"0xFFeeCC"),
            Ok(vec![0x31, 0x32, 0x33, 0xff, 0xee, 0xcc])
        );
        assert_eq!(
            parse_pattern("-100xab\"1\""),
            Ok(vec![0xf6, 0xff, 0xff, 0xff, 0xab, 0x31])
        );
        assert_eq!(parse_pattern("0xff0x14"), Ok(vec![0xff, 0x14]));
        assert_eq!(parse_pattern("0xabc"), Ok(vec![0x0a, 0xbc]));
        assert_eq!(parse_pattern("258"), Ok(vec![0x02, 0x01]));
        assert_eq!(
            parse_pattern(&format!("0x{}", "fe".repeat(21))),
            Ok(vec![0xfe; 21])
        );
        assert!(parse_pattern("4294967296").unwrap_err().contains("32 bits"));
        assert!(parse_pattern("\"open").is_err());
        assert!(parse_pattern("'file'").unwrap_err().contains("files"));
        assert!(parse_pattern("0x").is_err());
        assert!(parse_pattern("12 34").is_err());
    }

    #[test]
    fn distributions_cpus_percentiles() {
        assert_eq!(parse_distribution("random"), Ok(Distribution::Random));
        assert_eq!(parse_distribution("zipf"), Ok(Distribution::Zipf(1.1)));
        assert_eq!(parse_distribution("pareto"), Ok(Distribution::Pareto(0.2)));
        assert_eq!(parse_distribution("normal"), Ok(Distribution::Normal(0.0)));
        assert_eq!(parse_distribution("zipf:0.8"), Ok(Distribution::Zipf(0.8)));
        assert!(parse_distribution("random:3").is_err());
        assert_eq!(parse_cpus("0-1,3"), Ok(vec![0, 1, 3]));
        assert_eq!(parse_cpus("5, 2-3,2"), Ok(vec![2, 3, 5]));
        assert_eq!(parse_percentiles("1:99.99"), Ok(vec![1.0, 99.99]));
        assert!(parse_percentiles(&vec!["50"; 21].join(":")).is_err());
    }

    #[test]
    fn help_lists_every_option() {
        let h = help_text();
        for d in JOB_OPTIONS {
            assert!(h.contains(&format!("--{}", d.name)), "{}", d.name);
        }
        for p in PROGRAM_OPTIONS {
            assert!(h.contains(&format!("--{}", p.0)), "{}", p.0);
        }
        assert!(h.contains("-m, --reactor-mask=<mask>"));
        assert!(h.lines().all(|l| l.len() < 130), "{h}");
    }

    /// Every supported option reaches its handler (none falls to `unreachable!`).
    #[test]
    fn every_option_has_a_handler() {
        for d in JOB_OPTIONS {
            let sample = match d.name {
                "rw" => "read",
                "ioengine" => "null",
                "verify" => "md5",
                "random_distribution" => "zipf",
                "bsrange" => "4k-8k",
                "name" | "description" | "target" | "filename" => "x",
                "rwmixread" | "rwmixwrite" | "percentile_list" | "cpus_allowed" => "50",
                _ if d.arity == Arity::Value => "4096",
                _ => "1",
            };
            let mut b = Builder::new();
            b.set(d.name, sample)
                .unwrap_or_else(|e| panic!("{}: {e}", d.name));
            for a in d.aliases {
                b.set(a, sample).unwrap();
            }
            assert!(b.spec.options.iter().any(|(k, _)| k == d.name));
        }
    }
}
