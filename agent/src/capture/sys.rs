//! bpf(2) commands aya 0.14 does not expose, each checked against aya
//! 0.14.0's public API:
//!
//! - atomic lookup-and-delete of a hash-map element (kernel 5.14+ for hash
//!   maps): aya has it only for queues and stacks (`pop`);
//! - the batch lookups over a whole hash map (kernel 5.6+, LRU hash maps
//!   included): aya has no batch operations;
//! - loading a raw-instruction program (the no-op baseline of the benchmark,
//!   and the tests' stand-in for a program lbwitness does not own): aya loads
//!   programs only from an object file;
//! - BPF_LINK_CREATE for XDP, as a probe that never attaches anything
//!   (`xdp_link_supported`): aya has no XDP-link probe, and its
//!   `Xdp::attach` silently falls back to a netlink attachment, which
//!   outlives a crashed agent, when the kernel has no XDP links.
//!
//! BPF_PROG_TEST_RUN used to be here too; aya 0.14 has it
//! (`aya::programs::TestRun::test_run`), and `load_pass_xdp` hands back an
//! `aya::programs::Xdp` so the no-op baseline runs through it as well.

use std::{
    borrow::Cow,
    io,
    os::fd::{AsFd as _, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya::programs::{Xdp, loaded_programs};
use aya_obj::programs::XdpAttachType;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// The kernel's internal "operation not supported" (not in libc).
const ENOTSUPP: i32 = 524;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s BPF_XDP (kernel 5.9+).
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_HW_MODE`: offload to the NIC, which no loopback supports.
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
/// Every network namespace's loopback has this index.
const LOOPBACK_IFINDEX: u32 = 1;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`;
    // the kernel zero-extends attrs shorter than its own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Removes `key` from a hash map and returns its value in one step, so no
/// packet counted between a read and a delete is lost. `Ok(None)` when the
/// key is absent.
pub fn lookup_and_delete<K, V: Default>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    let mut value = V::default();
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: &mut value as *mut V as u64,
        ..MapElemAttr::default()
    };
    match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Whether a whole-map pass removes what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// BPF_MAP_LOOKUP_BATCH: read, leave in place.
    Read,
    /// BPF_MAP_LOOKUP_AND_DELETE_BATCH: read and remove, atomically per
    /// bucket, so no packet counted between a read and a delete is lost.
    Drain,
}

/// Entries per batch call: big enough that a pass over a million entries
/// takes a few hundred calls, small enough to keep the buffers at ~1 MiB.
const BATCH: usize = 8192;

/// Reads every entry of a hash map (LRU or not) in batches, calling `sink`
/// with each batch, and returns how many entries it read. `Ok(None)` when
/// the kernel has no batch operation for this map type (EINVAL or
/// ENOTSUPP before any entry was read): use the per-element commands.
///
/// A hash map batch walks the map bucket by bucket (kernel/bpf/hashtab.c),
/// so a pass sees every entry that stays in the map during the pass once.
pub fn batch_pass<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
    pass: Pass,
    mut sink: impl FnMut(&[K], &[V]),
) -> io::Result<Option<u64>> {
    let cmd = match pass {
        Pass::Read => BPF_MAP_LOOKUP_BATCH,
        Pass::Drain => BPF_MAP_LOOKUP_AND_DELETE_BATCH,
    };
    let mut chunk = BATCH;
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk];
    // Hash maps use a u32 bucket index as the batch token; other map types
    // use a key. 64 bytes holds either for every map lbwitness reads.
    let mut token_in = [0u64; 8];
    let mut token_out = [0u64; 8];
    let mut started = false;
    let mut total = 0u64;
    loop {
        let mut attr = BatchAttr {
            in_batch: if started { token_in.as_ptr() as u64 } else { 0 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let rc = bpf(cmd, &mut attr);
        let n = (attr.count as usize).min(chunk);
        match rc {
            Ok(_) => {}
            // The end of the map; the last batch may still hold entries.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                sink(&keys[..n], &values[..n]);
                return Ok(Some(total + n as u64));
            }
            // One bucket holds more entries than fit: retry it bigger.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                chunk *= 2;
                keys.resize(chunk, K::default());
                values.resize(chunk, V::default());
                continue;
            }
            Err(e)
                if !started
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
                    ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        sink(&keys[..n], &values[..n]);
        total += n as u64;
        token_in = token_out;
        started = true;
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// Loads `r0 = XDP_PASS; exit` named `name` (at most 15 bytes): the
/// cheapest possible XDP program. The benchmark's baseline, and the tests'
/// stand-in for a program lbwitness does not own. Run it with aya's
/// `TestRun::test_run`; attach it through `prog.fd()`.
pub fn load_pass_xdp(name: &str) -> io::Result<Xdp> {
    let fd = load_pass_xdp_fd(name)?;
    // aya keeps its own descriptor (a clone); ours closes on return.
    xdp_by_id(prog_id(fd.as_fd())?)
}

/// An aya handle on the loaded XDP program with kernel id `id` (as
/// `ip -j link show` gives it), e.g. the agent's attached program, to run
/// it with `TestRun::test_run`. Dropping the handle closes its descriptor
/// only; an attached program stays attached.
///
/// Here because aya's `Xdp::from_program_info` takes an attach type from
/// aya-obj that aya does not re-export.
pub fn xdp_by_id(id: u32) -> io::Result<Xdp> {
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no BPF program {id}")))?;
    let name = info.name_as_str().unwrap_or("xdp").to_owned();
    Xdp::from_program_info(info, Cow::Owned(name), XdpAttachType::Interface)
        .map_err(io::Error::other)
}

fn load_pass_xdp_fd(name: &str) -> io::Result<OwnedFd> {
    // mov64 r0, 2 (XDP_PASS); exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    let len = name.len().min(15);
    prog_name[..len].copy_from_slice(&name.as_bytes()[..len]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..ProgLoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The first fields of `struct bpf_prog_info`; the kernel copies only as
/// much as `info_len` asks for.
#[repr(C)]
#[derive(Default)]
struct ProgInfoPrefix {
    prog_type: u32,
    id: u32,
}

/// The kernel's id of a loaded program (BPF_OBJ_GET_INFO_BY_FD).
fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = ProgInfoPrefix::default();
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of::<ProgInfoPrefix>() as u32,
        info: &mut info as *mut ProgInfoPrefix as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.id)
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Whether the kernel can attach XDP programs as bpf_links (Linux 5.9,
/// commit aa8d3a716b59).
///
/// The probe asks for a link to the loopback in hardware-offload mode, which
/// no loopback has, so nothing is ever attached: a kernel with XDP links
/// reaches the driver and refuses with EOPNOTSUPP (or EBUSY/EEXIST if the
/// loopback already has a program), while one without them does not know
/// the attach type and says EINVAL.
pub fn xdp_link_supported() -> io::Result<bool> {
    let prog = load_pass_xdp_fd("lbw_probe")?;
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: LOOPBACK_IFINDEX,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_HW_MODE,
    };
    match bpf(BPF_LINK_CREATE, &mut attr) {
        Ok(fd) => {
            // Not expected (no loopback offloads XDP); close the link at
            // once so the probe leaves nothing attached.
            // SAFETY: the kernel returned a new link descriptor we own.
            drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | ENOTSUPP | libc::EBUSY | libc::EEXIST)
            ) =>
        {
            Ok(true)
        }
        Err(e) => Err(e),
    }
}
