//! Attaching a loaded tracepoint program by the id read from our own
//! tracefs (see `capture::tracefs` for why not aya's `TracePoint::attach`):
//! perf_event_open(2) on the tracepoint, then PERF_EVENT_IOC_SET_BPF and
//! PERF_EVENT_IOC_ENABLE. Closing the returned fd detaches the program, so
//! a killed agent leaves nothing attached.

use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

/// `PERF_TYPE_TRACEPOINT`.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0, 64
/// bytes): the kernel accepts every published size and zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const _: () = assert!(size_of::<PerfEventAttr>() == 64);

/// Attaches `prog` to the tracepoint with perf event id `id`.
pub fn attach_tracepoint(id: u64, prog: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    // SAFETY: perf_event_open(2) reads `attr`, which outlives the call. A
    // tracepoint event with pid -1 on CPU 0 runs its BPF program on every
    // CPU (the program hangs off the tracepoint, not the CPU), as aya does.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let raw = i32::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: a fresh descriptor the kernel just returned, owned from here.
    let perf = unsafe { OwnedFd::from_raw_fd(raw) };
    for (request, arg) in [
        (PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd() as libc::c_ulong),
        (PERF_EVENT_IOC_ENABLE, 0),
    ] {
        // SAFETY: ioctl on our own perf fd with an integer argument.
        if unsafe { libc::ioctl(perf.as_raw_fd(), request, arg) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(perf)
}
