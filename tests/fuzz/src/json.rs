//! JSON values from the fuzzer's bytes, and back.
//!
//! Random text rarely parses as JSON, and random JSON rarely names a parameter a
//! method knows, so the structured targets build a [`Value`] from bytes instead: one
//! tag byte per value, strings and object keys mostly drawn from [`STRINGS`] and
//! [`KEYS`] (what SPDK's methods and their parameters are called), numbers often from
//! [`NUMBERS`] (the boundaries parsers get wrong). [`encode`] is the inverse, for
//! seeds: `decode(encode(v)) == v` for every value whose strings and numbers it can
//! spell (see its tests).
//!
//! Format, one value: a tag byte `t`, by `t % 8`:
//! 0 null; 1 a boolean (`t & 0x80`); 2 an `i64` (8 bytes LE); 3 a number from
//! [`NUMBERS`] (1 byte index); 4 a float from [`FLOATS`] (1 byte index); 5 a string
//! from [`STRINGS`] (1 byte index); 6 a string of `n` bytes (1 byte `n`, then the bytes,
//! as lossy UTF-8); 7 an array (`t & 0x40` clear: 1 byte count `n`, then `n` values)
//! or an object (`t & 0x40` set: 1 byte count, then per member a key and a value; a key
//! is 1 byte `k`: below 0xff a name from [`KEYS`], 0xff a raw string as tag 6 has).
//! Nesting stops at depth [`DEPTH_MAX`] (deeper containers read as null).

use crate::input::Reader;
use serde_json::{Map, Number, Value};

/// The deepest nesting built.
pub const DEPTH_MAX: usize = 6;
/// Members or elements of one container at most.
pub const WIDTH_MAX: usize = 16;

/// Strings a value may be drawn from: names, NQNs, addresses, transport types, UUIDs,
/// hex identifiers, enum spellings, and a few that break naive parsers.
pub const STRINGS: &[&str] = &[
    "Malloc0",
    "Malloc1",
    "Null0",
    "M0",
    "nqn.2016-06.io.pollux:cnode1",
    "nqn.2016-06.io.pollux:cnode2",
    "nqn.2014-08.org.nvmexpress.discovery",
    "discovery",
    "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
    "TCP",
    "RDMA",
    "tcp",
    "PCIe",
    "IPv4",
    "IPv6",
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "4420",
    "0",
    "65535",
    "65536",
    "bdev",
    "nvmf",
    "sock",
    "iobuf",
    "off",
    "prefer",
    "force",
    "never",
    "when_needed",
    "always",
    "retry",
    "abort",
    "0000:00:04.0",
    "twin",
    "6f7d8a52-3c9e-4b1a-9f0e-2d5c4b3a2918",
    "00000000-0000-0000-0000-000000000000",
    "000102030405060708090A0B0C0D0E0F",
    "0001020304050607",
    "00010203-0405-0607-0809-0a0b0c0d0e0f",
    "POLLUX00000000000001",
    "Pollux fuzz",
    "@file",
    "",
    " ",
    "\u{e9}",
    "a\u{e9}",
    "\u{1f600}",
    "-1",
    "1e9",
    "0x10",
    "nqn.",
    "/",
    "EE_Malloc0",
    "Delay0",
    "failure",
    "nvme_failure",
    "pending",
    "corrupt_data",
    "nomem",
    "read",
    "write",
    "unmap",
    "flush",
    "all",
    "avg_read",
    "p99_read",
    "avg_write",
    "p99_write",
    "optimized",
    "non_optimized",
    "inaccessible",
    "change",
    "queue_depth",
];

/// Object keys: every parameter name the engine's methods read (SPDK's), and the
/// JSON-RPC and config envelope's.
pub const KEYS: &[&str] = &[
    "jsonrpc",
    "method",
    "params",
    "id",
    "subsystems",
    "subsystem",
    "config",
    "name",
    "num_blocks",
    "block_size",
    "uuid",
    "md_size",
    "md_interleave",
    "dif_type",
    "dif_is_head_of_md",
    "dif_pi_format",
    "physical_block_size",
    "optimal_io_boundary",
    "filename",
    "trtype",
    "traddr",
    "adrfam",
    "trsvcid",
    "subnqn",
    "hostnqn",
    "prchk_reftag",
    "prchk_guard",
    "ctrlr_loss_timeout_sec",
    "reconnect_delay_sec",
    "fast_io_fail_timeout_sec",
    "multipath",
    "num_io_queues",
    "io_queue_size",
    "cmb",
    "cmb_sqs",
    "cmb_lists",
    "cmb_data",
    "sgl",
    "io_timeout_ms",
    "reset_policy",
    "timeout",
    "tgt_name",
    "nqn",
    "serial_number",
    "model_number",
    "allow_any_host",
    "max_namespaces",
    "min_cntlid",
    "max_cntlid",
    "ana_reporting",
    "ana_state",
    "new_size",
    "selector",
    "namespace",
    "bdev_name",
    "nsid",
    "nguid",
    "eui64",
    "ptpl_file",
    "anagrpid",
    "no_auto_visible",
    "listen_address",
    "secure_channel",
    "host",
    "psk",
    "dhchap_key",
    "dhchap_ctrlr_key",
    "max_queue_depth",
    "max_io_qpairs_per_ctrlr",
    "in_capsule_data_size",
    "max_io_size",
    "io_unit_size",
    "max_aq_depth",
    "num_shared_buffers",
    "buf_cache_size",
    "c2h_success",
    "abort_timeout_sec",
    "sock_priority",
    "dif_insert_or_strip",
    "zcopy",
    "ack_timeout",
    "max_srq_depth",
    "no_srq",
    "acceptor_backlog",
    "num_cqe",
    "no_wr_batching",
    "max_h2c_data",
    "cmb_buffers",
    "base_bdev_name",
    "base_name",
    "delay_bdev_name",
    "avg_read_latency",
    "p99_read_latency",
    "avg_write_latency",
    "p99_write_latency",
    "latency_type",
    "latency_us",
    "error_type",
    "io_type",
    "num",
    "queue_depth",
    "nvme_sct",
    "nvme_sc",
    "corrupt_offset",
    "corrupt_value",
];

/// Numbers tag 3 draws from: the edges of every integer type and of the limits the
/// methods check.
pub const NUMBERS: &[i128] = &[
    0,
    1,
    2,
    -1,
    16,
    31,
    32,
    127,
    128,
    255,
    256,
    511,
    512,
    513,
    1023,
    1024,
    4095,
    4096,
    4097,
    8192,
    16384,
    32768,
    65535,
    65536,
    131072,
    1 << 20,
    (1 << 20) + 1,
    1 << 24,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 48,
    i64::MAX as i128,
    i64::MIN as i128,
    u64::MAX as i128,
    0xfff0,
    0xffef,
    0xfffe,
    4294967295,
];

/// Floats tag 4 draws from.
pub const FLOATS: &[f64] = &[0.5, -0.0, 1e300, -1e300, 4096.0, 1.5, 3.0e9];

/// A value from `r` (see the module's format).
pub fn decode(r: &mut Reader<'_>) -> Value {
    value(r, 0)
}

fn raw_string(r: &mut Reader<'_>) -> String {
    let n = r.u8() as usize;
    String::from_utf8_lossy(r.take(n)).into_owned()
}

fn number(n: i128) -> Value {
    if let Ok(v) = i64::try_from(n) {
        Value::Number(v.into())
    } else {
        Value::Number(Number::from(n as u64))
    }
}

fn value(r: &mut Reader<'_>, depth: usize) -> Value {
    let t = r.u8();
    match t % 8 {
        0 => Value::Null,
        1 => Value::Bool(t & 0x80 != 0),
        2 => Value::Number((r.u64() as i64).into()),
        3 => number(NUMBERS[r.u8() as usize % NUMBERS.len()]),
        4 => Number::from_f64(FLOATS[r.u8() as usize % FLOATS.len()])
            .map_or(Value::Null, Value::Number),
        5 => Value::String(STRINGS[r.u8() as usize % STRINGS.len()].to_owned()),
        6 => Value::String(raw_string(r)),
        _ if depth >= DEPTH_MAX => Value::Null,
        _ if t & 0x40 == 0 => {
            let n = (r.u8() as usize).min(WIDTH_MAX);
            Value::Array((0..n).map(|_| value(r, depth + 1)).collect())
        }
        _ => {
            let n = (r.u8() as usize).min(WIDTH_MAX);
            let mut m = Map::new();
            for _ in 0..n {
                let k = r.u8();
                let key = if k == 0xff {
                    raw_string(r)
                } else {
                    KEYS[k as usize % KEYS.len()].to_owned()
                };
                let v = value(r, depth + 1);
                m.insert(key, v);
            }
            Value::Object(m)
        }
    }
}

/// Bytes that [`decode`] reads back as `v` (strings longer than 255 bytes are cut,
/// numbers that are neither `i64` nor in [`NUMBERS`] nor [`FLOATS`] become null).
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

fn index_of<T: PartialEq>(list: &[T], x: &T) -> Option<u8> {
    list.iter().position(|y| y == x).map(|i| i as u8)
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => out.push(1 | if *b { 0x80 } else { 0 }),
        Value::Number(n) => {
            let exact = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            if let Some(i) = exact.and_then(|x| index_of(NUMBERS, &x)) {
                out.extend_from_slice(&[3, i]);
            } else if let Some(x) = n.as_i64() {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
            } else if let Some(i) = n.as_f64().and_then(|f| index_of(FLOATS, &f)) {
                out.extend_from_slice(&[4, i]);
            } else {
                out.push(0);
            }
        }
        Value::String(s) => match index_of(STRINGS, &s.as_str()) {
            Some(i) => out.extend_from_slice(&[5, i]),
            None => {
                out.push(6);
                encode_str(s, out);
            }
        },
        Value::Array(a) => {
            out.extend_from_slice(&[7, a.len().min(WIDTH_MAX) as u8]);
            for x in a.iter().take(WIDTH_MAX) {
                encode_into(x, out);
            }
        }
        Value::Object(m) => {
            out.extend_from_slice(&[7 | 0x40, m.len().min(WIDTH_MAX) as u8]);
            for (k, x) in m.iter().take(WIDTH_MAX) {
                match index_of(KEYS, &k.as_str()) {
                    Some(i) => out.push(i),
                    None => {
                        out.push(0xff);
                        encode_str(k, out);
                    }
                }
                encode_into(x, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_round_trip() {
        let v = json!({
            "name": "Malloc0", "num_blocks": 32768, "block_size": 4096,
            "namespace": {"bdev_name": "x-not-in-the-list", "nsid": 7},
            "odd key": [null, true, false, -5, 1.5, u64::MAX],
        });
        let b = encode(&v);
        assert_eq!(decode(&mut Reader::new(&b)), v);
    }

    #[test]
    fn the_dictionaries_fit_a_byte() {
        assert!(STRINGS.len() < 256 && KEYS.len() < 255 && NUMBERS.len() < 256);
    }
}
