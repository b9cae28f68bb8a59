//! pollux-perf beside fio, same machine, same core, same job, alternating rounds:
//! - the in-process `null` engine against fio's `ioengine=null` (4 KiB randread, QD128);
//! - the `uring` engine against fio's `io_uring` on the same tmpfs file (4 KiB randread,
//!   QD32, O_DIRECT, fixed buffers and registered files; fio's better of plain and
//!   `force_async=1` each round).
//!
//! Both write fio's JSON; one reader takes `jobs[0].read.iops` from each.
//! `cargo bench -p pollux-benches --bench perf_vs_fio` (POLLUX_BENCH_SECS per run,
//! default 5; POLLUX_BENCH_ROUNDS, default 3)

use pollux_benches::bench_secs;
use pollux_tools::perf::{options, run};
use std::process::Command;

fn iops_of(json: &str) -> f64 {
    let start = json.find('{').expect("JSON output");
    let v: serde_json::Value = serde_json::from_str(&json[start..]).expect("valid JSON");
    v["jobs"][0]["read"]["iops"]
        .as_f64()
        .expect("jobs[0].read.iops")
}

fn pollux(args: &[String], out: &std::path::Path) -> f64 {
    let mut a = args.to_vec();
    a.push("--output-format=json".into());
    a.push(format!("--output={}", out.display()));
    let spec = match options::parse_args(a) {
        Ok(options::Parsed::Run(s)) => s,
        other => panic!("options: {other:?}"),
    };
    assert_eq!(run::run(&spec).expect("pollux-perf runs"), 0);
    iops_of(&std::fs::read_to_string(out).unwrap())
}

fn fio(args: &[String]) -> f64 {
    let o = Command::new("fio")
        .args(args)
        .arg("--output-format=json")
        .output()
        .expect("fio is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    iops_of(&String::from_utf8_lossy(&o.stdout))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let secs = bench_secs(5);
    let rounds: usize = std::env::var("POLLUX_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let core = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let file = dir.path().join("perf.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let out = dir.path().join("out.json");
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--name=bench",
            "--rw=randread",
            "--bs=4k",
            &format!("--runtime={secs}"),
            "--time_based",
            "--ramp_time=1",
            &format!("--cpus_allowed={core}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let f = file.display().to_string();
    let cases: [(&str, Vec<String>, Vec<String>); 2] = [
        (
            "null engine, 4 KiB randread, QD128",
            common(&["--ioengine=null", "--size=1g", "--iodepth=128"]),
            common(&["--ioengine=null", "--size=1g", "--iodepth=128", "--thread"]),
        ),
        (
            "tmpfs file, 4 KiB randread, QD32, O_DIRECT",
            common(&[
                "--ioengine=io_uring",
                &format!("--filename={f}"),
                "--size=1g",
                "--iodepth=32",
                "--direct=1",
            ]),
            common(&[
                "--ioengine=io_uring",
                &format!("--filename={f}"),
                "--size=1g",
                "--iodepth=32",
                "--direct=1",
                "--fixedbufs",
                "--registerfiles",
                "--thread",
            ]),
        ),
    ];
    println!("pollux-perf beside fio on core {core}: {secs} s per run, {rounds} rounds, median");
    for (name, p_args, f_args) in cases {
        let (mut p, mut q) = (Vec::new(), Vec::new());
        // On tmpfs every read ends in io_uring's worker threads; fio gets its better
        // setting each round (plain, or force_async as pollux's uring bdev does there).
        let uring = f_args.iter().any(|a| a == "--ioengine=io_uring");
        for _ in 0..rounds {
            p.push(pollux(&p_args, &out));
            let mut best = fio(&f_args);
            if uring {
                let mut fa = f_args.clone();
                fa.push("--force_async=1".into());
                best = best.max(fio(&fa));
            }
            q.push(best);
        }
        let (pm, fm) = (median(p.clone()), median(q.clone()));
        println!(
            "  {name}: pollux-perf {pm:>10.0} IOPS, fio {fm:>10.0} IOPS, ratio {:.2} (pollux {:?}, fio {:?})",
            pm / fm,
            p.iter().map(|x| *x as u64).collect::<Vec<_>>(),
            q.iter().map(|x| *x as u64).collect::<Vec<_>>()
        );
    }
}
