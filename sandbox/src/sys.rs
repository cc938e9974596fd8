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
