//! The only module of this crate with `unsafe`: raw system calls that neither `nix` nor `caps`
//! wrap. Each block states why it is sound.

use std::os::fd::RawFd;

use nix::errno::Errno;

/// `close_range(first, u32::MAX, 0)`: close every descriptor from `first` up, whether or not it
/// has `FD_CLOEXEC`.
pub fn close_from(first: RawFd) -> Result<(), Errno> {
    close_range(first as libc::c_uint, libc::c_uint::MAX)
}

/// `close_range(first, last, 0)`.
pub fn close_range(first: libc::c_uint, last: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: close_range takes plain integers and touches no memory of ours. Closing descriptors
    // that Rust objects still own would be a logic error, so callers only use it in the exec
    // helper before any File or OwnedFd above stderr exists (except the control socket, which the
    // helper excludes from the range).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Take ownership of a descriptor a system call just returned.
///
/// Only for descriptors that nothing else owns (fresh from `open`, `fcntl(F_DUPFD_CLOEXEC)`, ...).
pub fn take_fd(fd: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass a descriptor that a system call returned to them a moment ago and that
    // no other object owns, so exactly one OwnedFd will close it.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Test-only: a raw system call, so the seccomp tests can compare the kernel's answer with and
/// without a filter for calls `nix` does not wrap.
///
/// Callers pass integers, and null or page-zero (never mapped) addresses for every pointer, and
/// never a call that maps, unmaps or shares memory or starts a thread or process running this
/// code: `clone` only with flag combinations the kernel rejects before creating anything.
#[cfg(test)]
pub(crate) fn probe_syscall(
    nr: libc::c_long,
    args: [libc::c_long; 6],
) -> Result<libc::c_long, Errno> {
    // SAFETY: under the contract above the kernel reads and writes none of our memory (a null or
    // page-zero pointer only yields EFAULT), changes no mapping, and creates no task that would
    // return into this code on a shared or copied stack; any other effect is on kernel state.
    let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if rc == -1 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// Test-only: `getpid` through the i386 entry (`int 0x80`), which a seccomp filter sees with
/// `AUDIT_ARCH_I386`. Returns the raw result (a pid, or `-errno`).
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn i386_getpid() -> i64 {
    // __NR_getpid in the i386 table.
    let mut rax: i64 = 20;
    // SAFETY: `int 0x80` enters the kernel's compat system call path; getpid takes no arguments and
    // touches no memory of ours, the CPU switches to the kernel stack (ours is untouched), and
    // every register but rax comes back unchanged (r8-r11 are declared clobbered for kernels that
    // zeroed them). Without IA32 emulation the instruction raises SIGSEGV instead.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("rax") rax,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack)
        )
    };
    rax
}

/// `setgroups(2)` for the calling thread only.
///
/// glibc's `setgroups` (and `nix::unistd::setgroups`, which calls it) broadcasts the change to
/// every thread of the process; the file-operation threads of the daemon must change only
/// themselves, so this is the raw system call, which the kernel applies to the caller's
/// credentials alone.
pub fn setgroups_this_thread(gids: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `gids.len()` gid_t values from `gids.as_ptr()`, a live slice of
    // exactly that many elements, and writes nothing of ours.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}
