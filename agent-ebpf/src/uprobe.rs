//! libssl uprobes: the plaintext of a TLS-terminating load balancer.
//!
//! On a TLS frontend the client socket carries only TLS records, so the
//! request is read where libssl hands it over: a return probe on
//! `SSL_read`/`SSL_read_ex` sees the decrypted bytes, a probe on
//! `SSL_write`/`SSL_write_ex` the bytes about to be encrypted. libssl may
//! use the load balancer's own BIO (HAProxy does), so the socket is not
//! read from the `SSL *`: it is the one a data syscall made inside the call,
//! on the same thread, named (`inside_ssl_call`); a call served from
//! libssl's buffer without a syscall uses the socket that `SSL *` used last.
//! Those nested syscalls still send their byte counts, marked
//! `tls::CIPHERTEXT`, with no payload.

use agent_common::request::{RequestCounter, syscall, tls};
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    req_emit::{DataMeta, current, emit_data, followed, now_ns},
    req_maps::{TLS_CALLS, TLS_SOCKS, TlsCall, TlsSock, count},
    tracepoint::user,
};

/// Marks the thread's SSL call, if one is in flight, with the socket of a
/// syscall inside it; returns whether there is one.
#[inline(always)]
pub fn inside_ssl_call(tid: u32, sk: u64, fd: i32) -> bool {
    match TLS_CALLS.get_ptr_mut(tid) {
        Some(call) => {
            // SAFETY: this thread's own map value.
            unsafe {
                (*call).sk = sk;
                (*call).fd = fd;
            }
            true
        }
        None => false,
    }
}

#[inline(always)]
fn enter_ssl(ctx: &ProbeContext, write: bool, ex: bool) -> u32 {
    let (tgid, tid) = current();
    if !followed(tgid) {
        return 0;
    }
    let arg = |n| ctx.arg::<u64>(n).unwrap_or(0);
    // `int num` in the plain forms: a negative one moves nothing.
    let len = if ex {
        arg(2)
    } else {
        u64::try_from(ctx.arg::<i32>(2).unwrap_or(0)).unwrap_or(0)
    };
    let call = TlsCall {
        ssl: arg(0),
        buf: arg(1),
        len,
        moved_at: if ex { arg(3) } else { 0 },
        sk: 0,
        enter_ns: now_ns(),
        fd: -1,
        write: u8::from(write),
        ex: u8::from(ex),
        _pad: [0; 2],
    };
    if TLS_CALLS.insert(tid, call, 0).is_err() {
        count(RequestCounter::TlsCallsFull);
    }
    0
}

#[inline(always)]
fn exit_ssl(ctx: &RetProbeContext) -> u32 {
    let (tgid, tid) = current();
    let Some(ptr) = TLS_CALLS.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: a map value of this thread; copied before it is deleted.
    let call = unsafe { *ptr };
    let _ = TLS_CALLS.remove(tid);
    let rc = ctx.ret::<i32>();
    let moved: i64 = if call.ex == 1 {
        // 1 on success, with the count in *moved_at.
        if rc == 1 {
            user::<u64>(call.moved_at).map_or(0, |n| n as i64)
        } else {
            0
        }
    } else {
        i64::from(rc)
    };
    if moved <= 0 {
        return 0;
    }
    let (sk, fd) = if call.sk != 0 {
        let known = TlsSock {
            sk: call.sk,
            fd: call.fd,
            _pad: 0,
        };
        let _ = TLS_SOCKS.insert(call.ssl, known, 0);
        (call.sk, call.fd)
    } else {
        match TLS_SOCKS.get_ptr(call.ssl) {
            // SAFETY: a map value, read at once.
            Some(s) => unsafe { ((*s).sk, (*s).fd) },
            None => {
                count(RequestCounter::TlsSocketUnknown);
                return 0;
            }
        }
    };
    let meta = DataMeta {
        tgid,
        tid,
        fd,
        syscall: if call.write == 1 {
            syscall::SSL_WRITE
        } else {
            syscall::SSL_READ
        },
        tls: tls::NONE,
        sk,
        ret: moved,
        enter_ns: call.enter_ns,
    };
    emit_data(&meta, call.buf, call.len);
    0
}

/// Entry of `SSL_read(ssl, buf, num)`.
#[uprobe]
pub fn lbw_ssl_read(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, false, false)
}

/// Entry of `SSL_read_ex(ssl, buf, num, readbytes)`.
#[uprobe]
pub fn lbw_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, false, true)
}

/// Entry of `SSL_write(ssl, buf, num)`.
#[uprobe]
pub fn lbw_ssl_write(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, true, false)
}

/// Entry of `SSL_write_ex(ssl, buf, num, written)`.
#[uprobe]
pub fn lbw_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, true, true)
}

/// Return of any of the four: the plaintext event.
#[uretprobe]
pub fn lbw_ssl_return(ctx: RetProbeContext) -> u32 {
    exit_ssl(&ctx)
}
