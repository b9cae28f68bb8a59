//! pollux-perf: a fio-compatible load generator on Pollux's reactors.
//!
//! `pollux-perf --name=r --ioengine=nvmf --target='trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.pollux:quickstart' --rw=randread --bs=4k --iodepth=32 --runtime=10 --time_based`
//! `pollux-perf jobs.fio` (fio job files run unchanged; `--help` lists the options)

use pollux_tools::perf::options::{self, Parsed};
use pollux_tools::perf::run;

fn main() {
    // Quiet unless asked: the report is the output.
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    pollux_tools::init_logging();
    match options::parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Help(text)) => print!("{text}"),
        Ok(Parsed::Version) => println!("pollux-perf-{}", env!("CARGO_PKG_VERSION")),
        Ok(Parsed::Run(spec)) => match run::run(&spec) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("pollux-perf: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("pollux-perf: {e}");
            std::process::exit(1);
        }
    }
}
