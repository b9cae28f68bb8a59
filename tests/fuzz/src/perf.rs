//! The `perf_job` target: pollux-perf's command-line and job-file parser, and the
//! workload generator it configures.
//!
//! Input: the command line up to the first NUL byte (one argument per line), then the
//! text of a job file. Without a NUL the whole input is the job file. Only options
//! reach the command line (arguments naming files are dropped: the input's job file,
//! written to a scratch directory beside the include files of `tools/tests/jobs`, is
//! the one file parsed).
//!
//! Checked: the parser answers (never panics), and for every job it accepts whose
//! region makes sense (size at least the largest block, offset + size in range), the
//! generator's sizes and offsets stay inside what the job asked for.

use pollux_tools::perf::model::{BlockSizes, JobSpec};
use pollux_tools::perf::options::{self, Parsed};
use pollux_tools::perf::workload::Generator;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The include files of `tools/tests/jobs`, by path relative to a job file.
const INCLUDES: &[(&str, &str)] = &[
    (
        "include/common.inc",
        include_str!("../../../tools/tests/jobs/include/common.inc"),
    ),
    (
        "include/job.inc",
        include_str!("../../../tools/tests/jobs/include/job.inc"),
    ),
    (
        "include/nested.inc",
        include_str!("../../../tools/tests/jobs/include/nested.inc"),
    ),
];

/// Command-line arguments taken at most.
pub const ARGS_MAX: usize = 64;
/// I/Os drawn from each job's generator.
pub const DRAWS: usize = 64;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("pollux-fuzz-perf-{}", std::process::id()));
        for (p, text) in INCLUDES {
            let f = d.join(p);
            std::fs::create_dir_all(f.parent().expect("a parent")).expect("scratch directory");
            std::fs::write(f, text).expect("an include file");
        }
        d
    })
}

/// Splits an input into its command-line options and its job file.
pub fn split(data: &[u8]) -> (Vec<String>, &[u8]) {
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return (Vec::new(), data);
    };
    let args = String::from_utf8_lossy(&data[..nul])
        .lines()
        .filter(|a| a.starts_with('-') && *a != "-" && *a != "--")
        .take(ARGS_MAX)
        .map(str::to_owned)
        .collect();
    (args, &data[nul + 1..])
}

/// An input in this format, for seeds.
pub fn input(args: &[&str], job: &str) -> Vec<u8> {
    let mut v = Vec::new();
    if !args.is_empty() {
        v.extend_from_slice(args.join("\n").as_bytes());
        v.push(0);
    }
    v.extend_from_slice(job.as_bytes());
    v
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let (mut args, job) = split(data);
    let path = scratch().join("job.fio");
    std::fs::write(&path, job).expect("the job file");
    if let Ok(sections) = options::parse_job_file(&path) {
        for (name, opts) in &sections {
            assert!(!name.is_empty(), "a section without a name");
            assert!(
                opts.iter().all(|(k, _)| !k.is_empty()),
                "an option without a name"
            );
        }
    }
    args.push(path.display().to_string());
    if let Ok(Parsed::Run(spec)) = options::parse_args(args) {
        for (i, j) in spec.jobs.iter().enumerate() {
            check_generator(j, i as u64);
        }
    }
}

/// Whether block size `b` is one `sizes` can give.
fn allowed(sizes: &BlockSizes, b: u64) -> bool {
    match sizes {
        BlockSizes::Fixed(x) => b == *x,
        BlockSizes::Range { min, max } => b >= *min && b <= *max && b.is_multiple_of(*min),
        BlockSizes::Split(v) => v.iter().any(|&(x, _)| x == b) || (v.is_empty() && b == 4096),
    }
}

fn check_generator(j: &JobSpec, seed: u64) {
    // The region pollux-perf's runner gives a job with this size and offset (an
    // in-memory device of offset + size bytes).
    let Some(len) = j.size else { return };
    let largest = j.bs_read.max().max(j.bs_write.max());
    if len < largest || j.offset.checked_add(len).is_none() {
        return;
    }
    assert!(
        j.bs_read.min() > 0 && j.bs_write.min() > 0,
        "job {:?}: a block size of 0 was accepted: {:?} {:?}",
        j.name,
        j.bs_read,
        j.bs_write
    );
    let mut g = Generator::new(j, j.offset, len, seed);
    for _ in 0..DRAWS {
        let d = if g.next_is_read() { 0 } else { 1 };
        let sizes = if d == 0 { &j.bs_read } else { &j.bs_write };
        let b = g.next_bs(d);
        assert!(
            allowed(sizes, b),
            "job {:?}: block size {b} is not one of {sizes:?}",
            j.name
        );
        let o = g.next_offset(d, b);
        assert!(
            o >= j.offset && o - j.offset + b.min(len) <= len,
            "job {:?}: offset {o} (+{b}) outside the region {}+{len}",
            j.name,
            j.offset
        );
    }
}
