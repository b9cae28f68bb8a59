//! Persistent Reservations of a namespace (base 8.19), as SPDK's target keeps them:
//! registrants are hosts (by Host Identifier, so one host's controllers share its
//! registration), one reservation holder (or every registrant, for the all-registrants
//! types), and with a `ptpl_file` the state survives a restart when the host asked for
//! Persist Through Power Loss.
//!
//! The state sits behind a mutex that only reservation commands take (on the I/O queue
//! thread that got them: rare, control-path commands). Reads and writes check it
//! without a lock: each thread keeps a copy and takes a new one when the version
//! changes, which a change bumps before its command completes.

use super::NvmfError;
use pollux_nvme::spec::cmd::{Sqe, Status};
use pollux_nvme::spec::resv::{
    Registrant, ResvDw, cptpl, racqa, report_encode, rrega, rrela, rtype,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A registered host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Reg {
    #[serde(with = "hex16")]
    hostid: [u8; 16],
    rkey: u64,
}

/// What a ptpl_file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// Reservation Register's generation.
    generation: u32,
    registrants: Vec<Reg>,
    /// The holder (any registrant of an all-registrants type).
    #[serde(with = "hex16_opt")]
    holder: Option<[u8; 16]>,
    rtype: u8,
    /// Persist Through Power Loss, as the host set it.
    ptpl: bool,
}

/// What I/O checks: the type and who may do what.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResvView {
    rtype: u8,
    holder: Option<[u8; 16]>,
    registrants: Vec<[u8; 16]>,
}

impl ResvView {
    /// Whether host `host` may run a command that reads (`write` false) or changes
    /// (`write` true) the namespace (SPDK's rules, base 8.19.1 Figure "Command Behavior
    /// in the Presence of a Reservation").
    pub(crate) fn allows(&self, host: &[u8; 16], write: bool) -> bool {
        if self.rtype == 0 || self.holder.as_ref() == Some(host) {
            return true;
        }
        let registered = self.registrants.contains(host);
        match self.rtype {
            rtype::WRITE_EXCLUSIVE => !write,
            rtype::EXCLUSIVE_ACCESS => false,
            rtype::WE_REGISTRANTS_ONLY | rtype::WE_ALL_REGISTRANTS => !write || registered,
            _ => registered,
        }
    }
}

/// A namespace's reservations.
#[derive(Debug)]
pub struct Reservations {
    version: AtomicU64,
    state: Mutex<State>,
    ptpl_file: Option<PathBuf>,
}

impl Reservations {
    /// None held; with `ptpl_file`, what it holds if it exists (a file a host asked to
    /// persist).
    pub fn new(ptpl_file: Option<PathBuf>) -> Result<Reservations, NvmfError> {
        let state = match &ptpl_file {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| NvmfError(format!("ptpl_file {}: {e}", p.display())))?;
                let s: State = serde_json::from_str(&text)
                    .map_err(|e| NvmfError(format!("ptpl_file {}: {e}", p.display())))?;
                if s.ptpl { s } else { State::default() }
            }
            _ => State::default(),
        };
        Ok(Reservations {
            version: AtomicU64::new(1),
            state: Mutex::new(state),
            ptpl_file,
        })
    }

    /// Its ptpl_file, if any.
    pub fn ptpl_file(&self) -> Option<&std::path::Path> {
        self.ptpl_file.as_deref()
    }

    /// Changes whenever the state does.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// What I/O checks now.
    pub(crate) fn view(&self) -> ResvView {
        let s = self.lock();
        ResvView {
            rtype: if s.holder.is_some() { s.rtype } else { 0 },
            holder: s.holder.filter(|_| !rtype::all_registrants(s.rtype)),
            registrants: s.registrants.iter().map(|r| r.hostid).collect(),
        }
    }

    /// Persist Through Power Loss now (Get Features Reservation Persistence).
    pub fn ptpl(&self) -> bool {
        self.lock().ptpl
    }

    /// Sets Persist Through Power Loss (Set Features Reservation Persistence):
    /// Invalid Field without a ptpl_file.
    pub(crate) fn set_ptpl(&self, on: bool) -> Status {
        if on && self.ptpl_file.is_none() {
            return Status::INVALID_FIELD;
        }
        let mut s = self.lock();
        s.ptpl = on;
        self.changed(&s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a change: the version moves and the file follows.
    fn changed(&self, s: &State) -> Status {
        self.version.fetch_add(1, Ordering::AcqRel);
        if let Some(p) = &self.ptpl_file {
            // Without PTPL the file says so, and a restart starts afresh.
            let keep = if s.ptpl { s.clone() } else { State::default() };
            let text = serde_json::to_string_pretty(&keep).expect("serializable");
            let tmp = p.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, p)) {
                tracing::error!(file = %p.display(), error = %e, "cannot write the reservations' ptpl_file");
                return Status::INTERNAL_ERROR;
            }
        }
        Status::SUCCESS
    }

    /// Runs Reservation Register, Acquire, Release or Report for host `host`, with the
    /// command's data `data` (Register: CRKEY, NRKEY; Acquire: CRKEY, PRKEY; Release:
    /// CRKEY). Report's data goes to `out`.
    pub(crate) fn command(
        &self,
        sqe: &Sqe,
        host: &[u8; 16],
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Status {
        use pollux_nvme::spec::admin::nvm_opc;
        let d = ResvDw::from_sqe(sqe);
        let key = |i: usize| -> Option<u64> {
            data.get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        match sqe.opc {
            nvm_opc::RESERVATION_REPORT => {
                if sqe.cdw11.get() & 1 == 0 {
                    // Fabrics hosts have 128-bit Host Identifiers, which only the
                    // extended data structure carries (base 7.5): Host Identifier
                    // Inconsistent Format, as SPDK's target answers.
                    return Status::HOST_ID_INCONSISTENT_FORMAT;
                }
                let s = self.lock();
                let regs: Vec<Registrant> = s
                    .registrants
                    .iter()
                    .map(|r| Registrant {
                        cntlid: 0xffff,
                        holds: s.holder.is_some()
                            && (rtype::all_registrants(s.rtype) || s.holder == Some(r.hostid)),
                        hostid: r.hostid,
                        rkey: r.rkey,
                    })
                    .collect();
                let rt = if s.holder.is_some() { s.rtype } else { 0 };
                *out = report_encode(s.generation, rt, s.ptpl, &regs, true);
                Status::SUCCESS
            }
            nvm_opc::RESERVATION_REGISTER => {
                let (Some(crkey), Some(nrkey)) = (key(0), key(1)) else {
                    return Status::SGL_LENGTH_INVALID;
                };
                self.register(d, host, crkey, nrkey)
            }
            nvm_opc::RESERVATION_ACQUIRE => {
                let (Some(crkey), Some(prkey)) = (key(0), key(1)) else {
                    return Status::SGL_LENGTH_INVALID;
                };
                self.acquire(d, host, crkey, prkey)
            }
            nvm_opc::RESERVATION_RELEASE => {
                let Some(crkey) = key(0) else {
                    return Status::SGL_LENGTH_INVALID;
                };
                self.release(d, host, crkey)
            }
            _ => Status::INVALID_OPCODE,
        }
    }

    fn register(&self, d: ResvDw, host: &[u8; 16], crkey: u64, nrkey: u64) -> Status {
        if d.action > rrega::REPLACE || d.cptpl == 1 {
            return Status::INVALID_FIELD;
        }
        if d.cptpl == cptpl::SET && self.ptpl_file.is_none() {
            return Status::INVALID_FIELD;
        }
        let mut s = self.lock();
        let me = s.registrants.iter().position(|r| r.hostid == *host);
        match (d.action, me) {
            (rrega::REGISTER, None) => {
                if nrkey == 0 {
                    return Status::INVALID_FIELD;
                }
                s.registrants.push(Reg {
                    hostid: *host,
                    rkey: nrkey,
                });
            }
            (rrega::REGISTER, Some(i)) => {
                // Registering again with the same key succeeds and changes nothing.
                if s.registrants[i].rkey != nrkey {
                    return Status::RESERVATION_CONFLICT;
                }
                return Status::SUCCESS;
            }
            (rrega::UNREGISTER, Some(i)) => {
                if !d.iekey && s.registrants[i].rkey != crkey {
                    return Status::RESERVATION_CONFLICT;
                }
                s.registrants.remove(i);
                release_if_gone(&mut s);
            }
            (rrega::REPLACE, Some(i)) => {
                if !d.iekey && s.registrants[i].rkey != crkey {
                    return Status::RESERVATION_CONFLICT;
                }
                if nrkey == 0 {
                    return Status::INVALID_FIELD;
                }
                s.registrants[i].rkey = nrkey;
            }
            (rrega::REPLACE, None) => {
                if !d.iekey && crkey != 0 {
                    return Status::RESERVATION_CONFLICT;
                }
                if nrkey == 0 {
                    return Status::INVALID_FIELD;
                }
                s.registrants.push(Reg {
                    hostid: *host,
                    rkey: nrkey,
                });
            }
            _ => return Status::RESERVATION_CONFLICT,
        }
        match d.cptpl {
            cptpl::SET => s.ptpl = true,
            cptpl::CLEAR => s.ptpl = false,
            _ => {}
        }
        s.generation = s.generation.wrapping_add(1);
        self.changed(&s)
    }

    fn acquire(&self, d: ResvDw, host: &[u8; 16], crkey: u64, prkey: u64) -> Status {
        if d.action > racqa::PREEMPT_AND_ABORT || !rtype::valid(d.rtype) {
            return Status::INVALID_FIELD;
        }
        let mut s = self.lock();
        if !registered_with(&s, host, d.iekey, crkey) {
            return Status::RESERVATION_CONFLICT;
        }
        if d.action == racqa::ACQUIRE {
            return match s.holder {
                None => {
                    s.holder = Some(*host);
                    s.rtype = d.rtype;
                    self.changed(&s)
                }
                Some(h)
                    if s.rtype == d.rtype && (h == *host || rtype::all_registrants(d.rtype)) =>
                {
                    Status::SUCCESS
                }
                Some(_) => Status::RESERVATION_CONFLICT,
            };
        }
        // Preempt (and abort: commands in flight are not aborted here, as on SPDK's
        // target they complete first).
        let holder_key = s
            .holder
            .and_then(|h| s.registrants.iter().find(|r| r.hostid == h))
            .map(|r| r.rkey);
        let all = s.holder.is_some() && rtype::all_registrants(s.rtype);
        let drop_key =
            |s: &mut State, k: u64| s.registrants.retain(|r| r.rkey != k || r.hostid == *host);
        match s.holder {
            None => drop_key(&mut s, prkey),
            Some(_) if all => {
                if prkey == 0 {
                    s.registrants.retain(|r| r.hostid == *host);
                    s.holder = Some(*host);
                    s.rtype = d.rtype;
                } else {
                    drop_key(&mut s, prkey);
                }
            }
            Some(_) if holder_key == Some(prkey) => {
                drop_key(&mut s, prkey);
                s.holder = Some(*host);
                s.rtype = d.rtype;
            }
            Some(_) => {
                if prkey == 0 {
                    return Status::INVALID_FIELD;
                }
                drop_key(&mut s, prkey);
            }
        }
        release_if_gone(&mut s);
        s.generation = s.generation.wrapping_add(1);
        self.changed(&s)
    }

    fn release(&self, d: ResvDw, host: &[u8; 16], crkey: u64) -> Status {
        if d.action > rrela::CLEAR {
            return Status::INVALID_FIELD;
        }
        let mut s = self.lock();
        if !registered_with(&s, host, d.iekey, crkey) {
            return Status::RESERVATION_CONFLICT;
        }
        if d.action == rrela::CLEAR {
            s.registrants.clear();
            s.holder = None;
            s.rtype = 0;
            s.generation = s.generation.wrapping_add(1);
            return self.changed(&s);
        }
        let Some(h) = s.holder else {
            return Status::SUCCESS;
        };
        if h != *host && !rtype::all_registrants(s.rtype) {
            // Not the holder: nothing happens (base 8.19.9).
            return Status::SUCCESS;
        }
        if s.rtype != d.rtype {
            return Status::INVALID_FIELD;
        }
        s.holder = None;
        s.rtype = 0;
        self.changed(&s)
    }
}

/// Whether `host` is a registrant whose key is `crkey` (any key with `iekey`): what
/// Acquire and Release ask first.
fn registered_with(s: &State, host: &[u8; 16], iekey: bool, crkey: u64) -> bool {
    s.registrants
        .iter()
        .any(|r| r.hostid == *host && (iekey || r.rkey == crkey))
}

/// The holder went away (unregistered or preempted): a single-holder reservation goes
/// with it, an all-registrants one with the last registrant, and the holder passes to
/// another registrant otherwise (the holder of an all-registrants type is any).
fn release_if_gone(s: &mut State) {
    let Some(h) = s.holder else { return };
    if s.registrants.iter().any(|r| r.hostid == h) {
        return;
    }
    match s.registrants.first() {
        Some(r) if rtype::all_registrants(s.rtype) => s.holder = Some(r.hostid),
        _ => {
            s.holder = None;
            s.rtype = 0;
        }
    }
}

/// A 128-bit identifier as 32 hex digits in a ptpl_file.
mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&uuid::Uuid::from_bytes(*v).simple().to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let t = String::deserialize(d)?;
        uuid::Uuid::parse_str(&t)
            .map(|u| *u.as_bytes())
            .map_err(D::Error::custom)
    }
}

mod hex16_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex16::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 16]>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(t) => uuid::Uuid::parse_str(&t)
                .map(|u| Some(*u.as_bytes()))
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollux_nvme::spec::admin::nvm_opc;
    use pollux_nvme::spec::resv::report_decode;

    fn cmd(r: &Reservations, opc: u8, d: ResvDw, host: u8, keys: &[u64]) -> Status {
        let sqe = Sqe {
            opc,
            cdw10: d.to_dw(),
            cdw11: zerocopy::little_endian::U32::new(1),
            ..Default::default()
        };
        let data: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
        r.command(&sqe, &[host; 16], &data, &mut Vec::new())
    }

    fn report(r: &Reservations) -> (u32, u8, bool, Vec<Registrant>) {
        let sqe = Sqe {
            opc: nvm_opc::RESERVATION_REPORT,
            cdw11: zerocopy::little_endian::U32::new(1),
            ..Default::default()
        };
        let mut out = Vec::new();
        assert!(r.command(&sqe, &[0; 16], &[], &mut out).is_success());
        report_decode(&out, true).unwrap()
    }

    #[test]
    fn register_acquire_preempt_release_and_the_io_rules() {
        let r = Reservations::new(None).unwrap();
        let reg = ResvDw::default();
        let we = |action| ResvDw {
            action,
            rtype: rtype::WRITE_EXCLUSIVE,
            ..Default::default()
        };
        assert_eq!(
            cmd(&r, nvm_opc::RESERVATION_ACQUIRE, we(0), 1, &[5, 0]),
            Status::RESERVATION_CONFLICT
        );
        assert!(cmd(&r, nvm_opc::RESERVATION_REGISTER, reg, 1, &[0, 5]).is_success());
        assert!(cmd(&r, nvm_opc::RESERVATION_REGISTER, reg, 2, &[0, 6]).is_success());
        assert_eq!(
            cmd(&r, nvm_opc::RESERVATION_REGISTER, reg, 1, &[0, 7]),
            Status::RESERVATION_CONFLICT
        );
        assert_eq!(
            cmd(&r, nvm_opc::RESERVATION_ACQUIRE, we(0), 1, &[9, 0]),
            Status::RESERVATION_CONFLICT,
            "wrong key"
        );
        assert!(cmd(&r, nvm_opc::RESERVATION_ACQUIRE, we(0), 1, &[5, 0]).is_success());
        assert_eq!(
            cmd(&r, nvm_opc::RESERVATION_ACQUIRE, we(0), 2, &[6, 0]),
            Status::RESERVATION_CONFLICT
        );
        let v = r.view();
        assert!(v.allows(&[1; 16], true) && v.allows(&[2; 16], false));
        assert!(!v.allows(&[2; 16], true) && !v.allows(&[3; 16], true));
        let (g, t, _, regs) = report(&r);
        assert_eq!((g, t, regs.len()), (2, rtype::WRITE_EXCLUSIVE, 2));
        assert!(regs[0].holds && !regs[1].holds);
        // Host 2 preempts host 1: it holds, host 1 is gone.
        assert!(cmd(&r, nvm_opc::RESERVATION_ACQUIRE, we(1), 2, &[6, 5]).is_success());
        let (g, _, _, regs) = report(&r);
        assert_eq!((g, regs.len(), regs[0].hostid), (3, 1, [2; 16]));
        assert!(!r.view().allows(&[1; 16], true));
        // Release with another type: Invalid Field; then released: all may write.
        let ea = ResvDw {
            rtype: rtype::EXCLUSIVE_ACCESS,
            ..Default::default()
        };
        assert_eq!(
            cmd(&r, nvm_opc::RESERVATION_RELEASE, ea, 2, &[6]),
            Status::INVALID_FIELD
        );
        assert!(cmd(&r, nvm_opc::RESERVATION_RELEASE, we(0), 2, &[6]).is_success());
        assert!(r.view().allows(&[1; 16], true));
        // Registrants-only: registrants write, others read only.
        let ro = ResvDw {
            rtype: rtype::WE_REGISTRANTS_ONLY,
            ..Default::default()
        };
        assert!(cmd(&r, nvm_opc::RESERVATION_REGISTER, reg, 1, &[0, 5]).is_success());
        assert!(cmd(&r, nvm_opc::RESERVATION_ACQUIRE, ro, 2, &[6, 0]).is_success());
        let v = r.view();
        assert!(v.allows(&[1; 16], true) && !v.allows(&[3; 16], true) && v.allows(&[3; 16], false));
        // Clear: nothing left.
        let clear = ResvDw {
            action: rrela::CLEAR,
            ..Default::default()
        };
        assert!(cmd(&r, nvm_opc::RESERVATION_RELEASE, clear, 1, &[5]).is_success());
        assert_eq!(report(&r).3.len(), 0);
        assert!(r.view().allows(&[3; 16], true));
    }

    #[test]
    fn ptpl_survives_a_restart_only_when_the_host_asked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ns1.ptpl");
        let r = Reservations::new(Some(f.clone())).unwrap();
        let set = ResvDw {
            cptpl: cptpl::SET,
            ..Default::default()
        };
        assert!(cmd(&r, nvm_opc::RESERVATION_REGISTER, set, 1, &[0, 5]).is_success());
        let ea = ResvDw {
            rtype: rtype::EXCLUSIVE_ACCESS,
            ..Default::default()
        };
        assert!(cmd(&r, nvm_opc::RESERVATION_ACQUIRE, ea, 1, &[5, 0]).is_success());
        drop(r);
        let r = Reservations::new(Some(f.clone())).unwrap();
        let (_, t, ptpl, regs) = report(&r);
        assert_eq!((t, ptpl, regs.len()), (rtype::EXCLUSIVE_ACCESS, true, 1));
        assert!(!r.view().allows(&[2; 16], false));
        // PTPL cleared: a restart forgets.
        assert!(r.set_ptpl(false).is_success());
        drop(r);
        let r = Reservations::new(Some(f)).unwrap();
        assert_eq!(report(&r).3.len(), 0);
        // Without a file, PTPL cannot be set.
        let r = Reservations::new(None).unwrap();
        assert_eq!(
            cmd(&r, nvm_opc::RESERVATION_REGISTER, set, 1, &[0, 5]),
            Status::INVALID_FIELD
        );
    }
}
