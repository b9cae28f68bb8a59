//! SPDK's log methods (`log_set_flag`, `log_clear_flag`, `log_get_flags`,
//! `log_set_level`, `log_get_level`, `log_set_print_level`, `log_get_print_level`) on
//! `tracing`'s filter, changed at run time.
//!
//! SPDK's model: a message of a level at or above the log level (or the print level)
//! is written; debug messages of a component are written only while its flag is set.
//! Pollux writes to one place, so the more verbose of the two levels counts. Its filter
//! is built from that: every target at most at `info` (NOTICE and INFO both map to
//! `info`), and each flagged component at the full level (`trace` at DEBUG, as SPDK's
//! debug log of a flagged component is everything it has). Target directives from
//! `RUST_LOG` are kept.
//!
//! The program owns the subscriber: it hands [`install_filter`] the function that
//! replaces the filter (polluxd does so with a reloadable `EnvFilter`).

use super::methods::parse;
use super::{RpcError, RpcServer};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

/// SPDK's log levels, least verbose first.
const LEVELS: [&str; 5] = ["ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"];

/// SPDK's log flags Pollux has, each with the `tracing` targets (module paths) of the
/// code it covers.
pub const FLAGS: &[(&str, &[&str])] = &[
    ("bdev", &["pollux_engine::bdev"]),
    ("bdev_malloc", &["pollux_engine::bdev::malloc"]),
    ("bdev_null", &["pollux_engine::bdev::null"]),
    ("bdev_nvme", &["pollux_engine::bdev::nvme"]),
    ("nvme", &["pollux_nvme"]),
    ("nvmf", &["pollux_engine::nvmf"]),
    ("nvmf_tcp", &["pollux_engine::nvmf::tcp"]),
    ("rdma", &["pollux_rdma", "pollux_engine::nvmf::rdma"]),
    ("reactor", &["pollux_engine::reactor"]),
    ("rpc", &["pollux_engine::rpc"]),
    ("app_config", &["polluxd"]),
    ("sock", &["pollux_engine::nvmf::tcp"]),
    ("sock_posix", &["pollux_engine::nvmf::tcp"]),
    ("thread", &["pollux_engine::thread", "pollux_engine::msg"]),
    ("uring", &["pollux_engine::bdev::uring"]),
    ("vbdev_delay", &["pollux_engine::bdev::delay"]),
];

type FilterFn = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static FILTER: OnceLock<FilterFn> = OnceLock::new();

struct State {
    level: usize,
    print_level: usize,
    flags: BTreeSet<&'static str>,
}

static STATE: Mutex<State> = Mutex::new(State {
    level: 2,
    print_level: 2,
    flags: BTreeSet::new(),
});

/// Hands the engine the function that replaces the program's log filter with a
/// `tracing_subscriber::EnvFilter` directive string; without one the log methods
/// report and change SPDK's state but say the filter is fixed.
pub fn install_filter(f: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) {
    let _ = FILTER.set(Box::new(f));
}

/// Sets flag `name` (or `all`) and the print level to DEBUG, as SPDK's `-L` does.
pub fn enable_flag_at_start(name: &str) -> Result<(), String> {
    let mut g = STATE.lock().unwrap();
    set_flag(&mut g, name, true)?;
    g.print_level = 4;
    apply(&g)
}

fn set_flag(g: &mut State, name: &str, on: bool) -> Result<(), String> {
    // As SPDK: `all`, or a glob matched without regard to case.
    // Flag names are short; a long pattern is refused rather than matched slowly.
    if name.len() > 64 {
        return Err("a log flag pattern is at most 64 bytes".into());
    }
    let pat = name.to_ascii_lowercase();
    let names: Vec<&'static str> = FLAGS
        .iter()
        .map(|f| f.0)
        .filter(|f| pat == "all" || glob(pat.as_bytes(), f.as_bytes()))
        .collect();
    if names.is_empty() {
        return Err(format!(
            "invalid log flag {name:?}: log_get_flags lists them (a glob, or all)"
        ));
    }
    for n in names {
        if on {
            g.flags.insert(n);
        } else {
            g.flags.remove(n);
        }
    }
    Ok(())
}

/// Whether `s` matches `pat` (`*` any run, `?` any one byte).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pat[1..], s) || (!s.is_empty() && glob(pat, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&pat[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// The filter for the state: see the module's documentation.
fn directives(g: &State) -> String {
    let lv = g.level.max(g.print_level);
    let name = |l: usize| ["error", "warn", "info", "info", "trace"][l];
    let mut d = vec![name(lv.min(3)).to_owned()];
    if let Ok(env) = std::env::var("RUST_LOG") {
        d.extend(
            env.split(',')
                .filter(|p| p.contains('='))
                .map(str::to_owned),
        );
    }
    for f in FLAGS.iter().filter(|f| g.flags.contains(f.0)) {
        d.extend(f.1.iter().map(|t| format!("{t}={}", name(lv))));
    }
    d.join(",")
}

fn apply(g: &State) -> Result<(), String> {
    match FILTER.get() {
        Some(f) => f(&directives(g)),
        None => Err("this program's log filter cannot be changed at run time".into()),
    }
}

fn level_index(s: &str) -> Result<usize, RpcError> {
    let up = s.to_ascii_uppercase();
    let up = if up == "WARN" { "WARNING".into() } else { up };
    LEVELS.iter().position(|l| *l == up).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "level {s:?}: one of ERROR, WARNING, NOTICE, INFO, DEBUG"
        ))
    })
}

/// Changes the state with `f` and applies it; on any failure the state is as before.
fn change(f: impl FnOnce(&mut State) -> Result<(), RpcError>) -> Result<(), RpcError> {
    let mut g = STATE.lock().unwrap();
    let mut next = State {
        level: g.level,
        print_level: g.print_level,
        flags: g.flags.clone(),
    };
    f(&mut next)?;
    apply(&next).map_err(RpcError::failed)?;
    *g = next;
    Ok(())
}

pub(super) fn register(s: &mut RpcServer) {
    for (m, on) in [("log_set_flag", true), ("log_clear_flag", false)] {
        s.register(m, move |_, p| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                flag: String,
            }
            let p: P = parse(p)?;
            change(|g| set_flag(g, &p.flag, on).map_err(RpcError::invalid_params))?;
            tracing::info!(flag = %p.flag, on, "log flag changed");
            Ok(json!(true))
        });
    }
    s.register("log_get_flags", |_, p| {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {}
        let _: P = parse(p)?;
        let g = STATE.lock().unwrap();
        let m: serde_json::Map<String, Value> = FLAGS
            .iter()
            .map(|f| (f.0.to_owned(), json!(g.flags.contains(f.0))))
            .collect();
        Ok(Value::Object(m))
    });
    for (set, get, print) in [
        ("log_set_level", "log_get_level", false),
        ("log_set_print_level", "log_get_print_level", true),
    ] {
        s.register(set, move |_, p| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                level: String,
            }
            let p: P = parse(p)?;
            let l = level_index(&p.level)?;
            change(|g| {
                if print {
                    g.print_level = l;
                } else {
                    g.level = l;
                }
                Ok(())
            })?;
            tracing::info!(method = set, level = LEVELS[l], "log level changed");
            Ok(json!(true))
        });
        s.register(get, move |_, p| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {}
            let _: P = parse(p)?;
            let g = STATE.lock().unwrap();
            Ok(json!(LEVELS[if print { g.print_level } else { g.level }]))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_follow_spdk_levels_and_flags() {
        let mut g = State {
            level: 2,
            print_level: 2,
            flags: BTreeSet::new(),
        };
        assert!(directives(&g).starts_with("info"));
        // DEBUG without a flag writes no debug message.
        g.print_level = 4;
        assert!(directives(&g).starts_with("info"));
        set_flag(&mut g, "nvmf_tcp", true).unwrap();
        assert!(directives(&g).ends_with("pollux_engine::nvmf::tcp=trace"));
        g.print_level = 1;
        g.level = 0;
        let d = directives(&g);
        assert!(d.starts_with("warn"), "{d}");
        assert!(d.ends_with("pollux_engine::nvmf::tcp=warn"), "{d}");
        assert!(set_flag(&mut g, "nvmf_tpc", true).is_err());
        set_flag(&mut g, "NVMF*", true).unwrap();
        assert!(g.flags.contains("nvmf") && g.flags.len() == 2);
        set_flag(&mut g, "all", true).unwrap();
        assert_eq!(g.flags.len(), FLAGS.len());
        set_flag(&mut g, "all", false).unwrap();
        assert!(g.flags.is_empty());
    }
}
