//! pollux-perf as a fio user runs it: the same job file in fio and in pollux-perf, JSON
//! read by one reader, verification against polluxd over NVMe/TCP, an injected
//! corruption reported with its offset, logs and the plot.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn perf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
        .args(args)
        .output()
        .unwrap()
}

/// What a tool reading fio's JSON takes from it.
struct Summary {
    jobname: String,
    read_iops: f64,
    write_iops: f64,
    read_p99_ns: f64,
    rw_option: String,
    errors: i64,
}

fn read_fio_json(text: &str) -> Vec<Summary> {
    // fio may print notes before the JSON object.
    let start = text.find('{').expect("a JSON object");
    let v: Value = serde_json::from_str(&text[start..]).expect("valid JSON");
    v["jobs"]
        .as_array()
        .expect("jobs[]")
        .iter()
        .map(|j| Summary {
            jobname: j["jobname"].as_str().unwrap().to_owned(),
            read_iops: j["read"]["iops"].as_f64().unwrap(),
            write_iops: j["write"]["iops"].as_f64().unwrap(),
            read_p99_ns: j["read"]["clat_ns"]["percentile"]["99.000000"]
                .as_f64()
                .unwrap_or(0.0),
            rw_option: j["job options"]["rw"].as_str().unwrap_or("").to_owned(),
            errors: j["error"].as_i64().unwrap(),
        })
        .collect()
}

#[test]
fn one_job_file_runs_in_fio_and_in_pollux_perf_and_one_reader_reads_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.img");
    let job = dir.path().join("job.fio");
    std::fs::write(
        &job,
        format!(
            "; written for fio's io_uring engine\n[global]\nioengine=io_uring\nfilename={}\nsize=16m\nbs=4k\ndirect=1\nruntime=1\ntime_based\n\n[randread]\nrw=randread\niodepth=8\n",
            file.display()
        ),
    )
    .unwrap();
    // fio lays the file out and runs; pollux-perf runs the same file unchanged.
    let f = Command::new("fio")
        .args(["--output-format=json"])
        .arg(&job)
        .output()
        .expect("fio is installed (tests/run-all installs it)");
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    let p = perf(&["--output-format=json", job.to_str().unwrap()]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    for out in [&f.stdout, &p.stdout] {
        let s = read_fio_json(&String::from_utf8_lossy(out));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].jobname, "randread");
        assert!(s[0].read_iops > 0.0);
        assert_eq!(s[0].write_iops, 0.0);
        assert!(s[0].read_p99_ns > 0.0);
        assert_eq!(s[0].rw_option, "randread");
        assert_eq!(s[0].errors, 0);
    }
}

#[test]
fn verify_catches_an_injected_corruption_and_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.img");
    let f = file.to_str().unwrap();
    let write = perf(&[
        "--name=w",
        "--ioengine=io_uring",
        &format!("--filename={f}"),
        "--size=4m",
        "--rw=write",
        "--bs=4k",
        "--iodepth=4",
        "--verify=crc32c",
    ]);
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    let text = String::from_utf8_lossy(&write.stdout);
    assert!(text.contains("err= 0"), "{text}");
    // Corrupt one byte of the block at 1 MiB.
    let mut data = std::fs::read(&file).unwrap();
    data[(1 << 20) + 100] ^= 0xff;
    std::fs::write(&file, &data).unwrap();
    let read = perf(&[
        "--name=r",
        "--ioengine=io_uring",
        &format!("--filename={f}"),
        "--size=4m",
        "--rw=read",
        "--bs=4k",
        "--verify=crc32c",
        "--verify_fatal=1",
    ]);
    assert!(!read.status.success(), "a verify error fails the run");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&read.stdout),
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(all.contains("offset 1048576"), "{all}");
    assert!(
        all.contains("expected 0x") && all.contains("found 0x"),
        "{all}"
    );
}

#[test]
fn unknown_options_are_refused_by_name_and_help_lists_the_rest() {
    let o = perf(&["--name=x", "--ioengine=null", "--size=1m", "--frobnicate=1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("frobnicate"));
    let h = perf(&["--help"]);
    assert!(h.status.success());
    let text = String::from_utf8_lossy(&h.stdout);
    for opt in [
        "rw",
        "bs",
        "bssplit",
        "iodepth",
        "numjobs",
        "runtime",
        "verify",
        "ioengine",
        "target",
        "percentile_list",
        "write_lat_log",
        "output-format",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn logs_plot_json_plus_and_terse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let svg = format!("{d}/p.svg");
    let o = perf(&[
        "--name=mix",
        "--ioengine=null",
        "--size=64m",
        "--rw=randrw",
        "--rwmixread=70",
        "--bssplit=4k/50:64k/50",
        "--iodepth=16",
        "--runtime=1",
        "--time_based",
        "--numjobs=2",
        "--group_reporting",
        &format!("--write_lat_log={d}/l"),
        &format!("--write_iops_log={d}/l"),
        "--output-format=json+,terse",
        &format!("--plot={svg}"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let s = read_fio_json(&text[..text.rfind('}').unwrap() + 1]);
    assert_eq!(s.len(), 1, "group_reporting merges the two clones");
    assert!(s[0].read_iops > s[0].write_iops && s[0].write_iops > 0.0);
    assert!(text.contains("\"bins\""));
    let terse = text.lines().last().unwrap();
    assert!(terse.starts_with("3;"), "{terse}");
    assert_eq!(terse.split(';').count(), 130 - 9, "{terse}");
    let lat = std::fs::read_to_string(format!("{d}/l_lat.1.log")).unwrap();
    let first: Vec<&str> = lat.lines().next().unwrap().split(", ").collect();
    assert!(first.len() >= 5, "{first:?}");
    assert!(Path::new(&format!("{d}/l_iops.1.log")).exists());
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn against_polluxd_over_tcp_verify_sees_zero_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let port = pollux_tests::free_port();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = std::fs::read_to_string(root.join("examples/quickstart.json"))
        .unwrap()
        .replace("\"4420\"", &format!("\"{port}\""));
    let cfgp = dir.path().join("q.json");
    std::fs::write(&cfgp, cfg).unwrap();
    let d = pollux_tests::KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_polluxd"))
            .args(["-m", "0x1", "--small-pools", "-r"])
            .arg(&sock)
            .arg("-c")
            .arg(&cfgp)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = format!(
        "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:{port} subnqn:nqn.2016-06.io.pollux:quickstart ns:1"
    );
    let o = perf(&[
        "--ioengine=nvmf",
        &format!("--target={target}"),
        "--name=w",
        "--rw=randwrite",
        "--bsrange=4k-128k",
        "--iodepth=16",
        "--size=32m",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--name=r",
        "--stonewall",
        "--rw=randread",
        "--bs=4k",
        "--iodepth=32",
        "--size=32m",
        "--runtime=1",
        "--time_based",
        "--output-format=json",
    ]);
    let mut d = d.take();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    assert!(d.wait().unwrap().success());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_fio_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].errors + s[1].errors, 0);
    assert!(s[0].write_iops > 0.0 && s[1].read_iops > 0.0);
}

#[test]
fn regressions_from_review_end_cleanly_with_the_right_verdict() {
    let run = |args: &[&str]| {
        let t = Instant::now();
        let o = perf(args);
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{args:?} took too long"
        );
        o
    };
    // An I/O size the engine can never carry is an error, not a spin.
    let o = run(&[
        "--name=a",
        "--ioengine=null",
        "--size=64m",
        "--bs=4m",
        "--rw=read",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("need more than"));
    // Mixed random read/write with verify: reads of blocks not yet written are not
    // checked (fio's rule), and the verify pass finds everything written.
    let o = run(&[
        "--name=m",
        "--ioengine=malloc",
        "--size=1m",
        "--rw=randrw",
        "--bsrange=4k-16k",
        "--verify=crc32c",
        "--output-format=json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        read_fio_json(&String::from_utf8_lossy(&o.stdout))[0].errors,
        0
    );
    // A time-based write job still verifies what it wrote when the time is up.
    let o = run(&[
        "--name=w",
        "--ioengine=malloc",
        "--size=1m",
        "--rw=write",
        "--verify=crc32c",
        "--time_based",
        "--runtime=1",
        "--output-format=json",
    ]);
    assert!(o.status.success());
    let s = read_fio_json(&String::from_utf8_lossy(&o.stdout));
    assert!(
        s[0].read_iops > 0.0,
        "no verify reads after a time-based write"
    );
}
