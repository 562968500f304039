//! bpf(2) commands aya 0.14 does not expose: atomic lookup-and-delete of a
//! hash-map element (kernel 5.14+ for hash maps), the batch lookups over a
//! whole hash map (kernel 5.6+, LRU hash maps included), BPF_PROG_TEST_RUN,
//! and loading a raw-instruction program (the no-op baseline of the
//! benchmark).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// The kernel's internal "operation not supported" (not in libc).
const ENOTSUPP: i32 = 524;
const BPF_PROG_TYPE_XDP: u32 = 6;

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
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Result of a BPF_PROG_TEST_RUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (an XDP action).
    pub retval: u32,
    /// Mean run time per repeat, in ns, as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs a loaded program `repeat` times on `frame` (BPF_PROG_TEST_RUN).
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    // XDP test runs may grow the frame; give the output room for it.
    let mut out = vec![0u8; frame.len() + 512];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
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
/// stand-in for a program lbwitness does not own.
pub fn load_pass_xdp(name: &str) -> io::Result<OwnedFd> {
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
    // SAFETY: the kernel returned a new, owned file descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
