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

/// `fork()`, for the exec helper only.
///
/// The helper forks twice when the job gets its own pid namespace (monitor → init → job).
pub fn fork_in_helper() -> Result<nix::unistd::ForkResult, Errno> {
    // SAFETY: fork is unsound only in a multi-threaded process, where the child may inherit a lock
    // another thread held. The only caller is the exec helper, which `main` enters before any
    // thread or runtime exists (the helper argument is checked first), so the process has one
    // thread and the child is a complete copy of it.
    unsafe { nix::unistd::fork() }
}

/// `waitpid(pid, &status, 0)` with the raw wait status. `nix`'s `WaitStatus` cannot hold a
/// real-time signal: for a child killed by one, the kernel has already reaped it when nix fails
/// with EINVAL, and the status is lost. The exec helper's monitor and init need every status.
pub fn waitpid_raw(pid: libc::pid_t) -> Result<(libc::pid_t, libc::c_int), Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one int through the pointer, to `status`, a live local.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok((rc, status))
    }
}

/// End this process by signal number `sig` (real-time signals included): default disposition,
/// unblocked, raised. Returns only if `sig` does not terminate by default (or is not a signal).
pub fn raise_with_default_action(sig: libc::c_int) {
    // SAFETY: SIG_DFL is a disposition, not a handler: no code of ours runs for the signal.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the sigset_t it is given, a live local.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: `set` was initialised by sigemptyset just above.
    let mut set = unsafe { set.assume_init() };
    // SAFETY: sigaddset writes into `set`, a live local; an invalid number only gives EINVAL.
    unsafe { libc::sigaddset(&mut set, sig) };
    // SAFETY: sigprocmask reads `set` (live) and writes nothing (null old set).
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: raise takes an integer; the default action ends the process or does nothing.
    unsafe { libc::raise(sig) };
}

/// `waitid(P_PIDFD, pidfd, WEXITED | WNOHANG)` with the raw siginfo: `None` while the process
/// runs, else `(si_code, si_status)`: `CLD_EXITED` with the exit code, `CLD_KILLED`/`CLD_DUMPED`
/// with the signal number (any signal: nix's `WaitStatus` fails with EINVAL on real-time
/// signals after the kernel has already reaped the child).
pub fn waitid_pidfd_exited(
    pidfd: std::os::fd::BorrowedFd<'_>,
) -> Result<Option<(libc::c_int, libc::c_int)>, Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: siginfo_t is plain integers and unions of integers; all-zero is a valid value
    // (and si_pid 0 is how waitid says "nothing exited yet" with WNOHANG).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes one siginfo_t through the pointer, to `info`, a live local.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: waitid filled in the SIGCHLD layout of the union (or left it zeroed).
    let pid = unsafe { info.si_pid() };
    if pid == 0 {
        return Ok(None);
    }
    // SAFETY: as above: the SIGCHLD layout, filled in by the kernel for an exited child.
    let status = unsafe { info.si_status() };
    Ok(Some((info.si_code, status)))
}

/// Set `sig` to `SIG_IGN` (`ignore`) or back to `SIG_DFL`.
pub fn set_signal_ignored(sig: nix::sys::signal::Signal, ignore: bool) -> Result<(), Errno> {
    use nix::sys::signal::SigHandler;
    let handler = if ignore {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: `signal` is unsafe because a handler function would run in signal context. SIG_IGN
    // and SIG_DFL are dispositions, not functions: no code of ours ever runs for the signal.
    unsafe { nix::sys::signal::signal(sig, handler) }.map(drop)
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

/// What [`spawn_into_cgroup`] executes: prepared before the clone, so the child only makes
/// system calls.
pub struct ExecImage {
    path: std::ffi::CString,
    /// Kept alive for the pointer arrays below.
    _strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecImage {
    /// `path` executed with `argv` and `envp`. Fails with EINVAL on an interior NUL byte.
    pub fn new(path: &[u8], argv: &[&[u8]], envp: &[&[u8]]) -> Result<ExecImage, Errno> {
        use std::ffi::CString;
        let c = |b: &[u8]| CString::new(b).map_err(|_| Errno::EINVAL);
        let path = c(path)?;
        let argv_c: Vec<CString> = argv.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let envp_c: Vec<CString> = envp.iter().map(|e| c(e)).collect::<Result<_, _>>()?;
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = ptrs(&argv_c);
        let envp = ptrs(&envp_c);
        let mut strings = argv_c;
        strings.extend(envp_c);
        Ok(ExecImage {
            path,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// `struct clone_args` of linux/sched.h (CLONE_ARGS_SIZE_VER2: with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What the child of [`spawn_into_cgroup`] reads, and writes back if its `execve` fails. Lives in
/// the parent's memory, which the child shares (CLONE_VM) while the parent waits (CLONE_VFORK).
#[repr(C)]
struct ChildContext {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    fds: [libc::c_int; 3],
    /// errno of the failed step; 0 if the child reached a successful execve.
    error: libc::c_int,
}

/// Size of the child's stack (it runs one small function of system calls) and its guard page.
const CHILD_STACK: usize = 64 * 1024;
const GUARD: usize = 4096;

/// The kernel's `struct sigaction` for `rt_sigaction` on x86_64 (not glibc's, whose mask is 128
/// bytes and comes second).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The child's failure path: record errno in the context, `_exit(127)`.
fn child_fail(ctx: &mut ChildContext) -> ! {
    // This thread's errno slot is the parent thread's TLS (shared while it is suspended by
    // CLONE_VFORK); reading it is a plain load.
    ctx.error = Errno::last_raw();
    // SAFETY: exit_group takes an integer and does not return.
    unsafe { libc::syscall(libc::SYS_exit_group, 127) };
    unreachable!("exit_group returned")
}

/// The child of [`spawn_into_cgroup`]: runs on its own stack, in the parent's memory, while the
/// parent thread is suspended. Only system calls (async-signal-safe), no allocation, no locks,
/// no Rust runtime: reset every signal disposition and the signal mask, put the three
/// descriptors on 0, 1 and 2, execve. On failure record errno and `_exit(127)`.
extern "C" fn spawn_child(ctx: *mut ChildContext) -> ! {
    // SAFETY: `ctx` points to the parent's ChildContext, alive until the parent resumes, which
    // CLONE_VFORK delays until this process has exec'd or exited; nothing else touches it
    // meanwhile (the parent thread is suspended, and no other thread knows it).
    let ctx = unsafe { &mut *ctx };
    // Signal handlers of the daemon (tokio's) must not run here; default dispositions for the
    // helper, like posix_spawn's POSIX_SPAWN_SETSIGDEF for every signal. Errors (EINVAL for
    // numbers the kernel reserves) are irrelevant.
    let dfl = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads the kernel-layout struct `dfl` (alive on this stack)
            // and writes nothing (null old action); sigsetsize 8 as on x86_64.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask reads the 8-byte mask `empty` (alive on this stack), writes nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    if rc != 0 {
        child_fail(ctx);
    }
    for (target, &fd) in ctx.fds.iter().enumerate() {
        // The parent guarantees fd > 2, so no source is overwritten before it is used. dup3
        // without O_CLOEXEC: the copies on 0, 1, 2 survive the execve, the sources do not.
        // SAFETY: dup3 takes integers only.
        if unsafe { libc::syscall(libc::SYS_dup3, fd, target as libc::c_int, 0) } < 0 {
            child_fail(ctx);
        }
    }
    // SAFETY: path, argv and envp point into the parent's ExecImage (NUL-terminated strings,
    // null-terminated arrays), alive until the parent resumes after this execve.
    unsafe { libc::syscall(libc::SYS_execve, ctx.path, ctx.argv, ctx.envp) };
    child_fail(ctx)
}

/// Start `image` with `fds` as its stdin, stdout and stderr, directly in the cgroup2 directory
/// `cgroup` (`clone3(CLONE_INTO_CGROUP | CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, like glibc's
/// `posix_spawn` with `POSIX_SPAWN_SETCGROUP`): the child never migrates, so no `cgroup.procs`
/// write and no wait for an RCU grace period. Safe to call from a multi-threaded process: the
/// child only makes system calls (see `spawn_child`), and the page tables are not copied
/// (CLONE_VM), so the cost does not grow with the caller's size. Returns the pid and a pidfd.
///
/// Errors: the kernel's for `clone3` (ENOSYS before 5.3, E2BIG before 5.7 (no `cgroup` field),
/// EOPNOTSUPP / EINVAL / EBUSY when the cgroup cannot take it), or the child's errno if `dup3` or
/// `execve` failed (the child is reaped). EINVAL if a descriptor is 0, 1 or 2. ENOSYS on
/// architectures other than x86_64 (the child start needs a few lines of assembly per arch).
pub fn spawn_into_cgroup(
    image: &ExecImage,
    fds: [std::os::fd::BorrowedFd<'_>; 3],
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> Result<(libc::pid_t, std::os::fd::OwnedFd), Errno> {
    use std::os::fd::AsRawFd;
    if fds.iter().any(|f| f.as_raw_fd() <= 2) {
        return Err(Errno::EINVAL);
    }
    let mut ctx = ChildContext {
        path: image.path.as_ptr(),
        argv: image.argv.as_ptr(),
        envp: image.envp.as_ptr(),
        fds: fds.map(|f| f.as_raw_fd()),
        error: 0,
    };
    let stack = ChildStack::new()?;
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64 | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64,
        stack_size: stack.size as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // Block every signal across the clone, so no handler of ours runs in the child before it has
    // reset them (the child unblocks them itself).
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all),
        Some(&mut old),
    )?;
    let rc = clone3_vfork(&args, &mut ctx);
    let restored = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old),
        None,
    );
    let pid = rc?;
    let pidfd = take_fd(pidfd);
    restored?;
    if ctx.error != 0 {
        // The child has exited (CLONE_VFORK resumed us): reap it so no zombie is left.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(Errno::from_raw(ctx.error));
    }
    Ok((pid, pidfd))
}

/// CLONE_INTO_CGROUP (linux/sched.h, 5.7+); libc does not define it for every target.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// An mmap'd stack for the child, with a guard page below it.
struct ChildStack {
    map: *mut libc::c_void,
    base: *mut libc::c_void,
    size: usize,
}

impl ChildStack {
    fn new() -> Result<ChildStack, Errno> {
        let len = CHILD_STACK + GUARD;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; it aliases
        // nothing of ours. Checked for MAP_FAILED below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = ChildStack {
            map,
            // SAFETY: GUARD < len, so the result stays inside the mapping.
            base: unsafe { map.cast::<u8>().add(GUARD).cast() },
            size: CHILD_STACK,
        };
        // SAFETY: the lowest page of our own fresh mapping; a stack overflow in the child faults
        // there instead of writing below the mapping.
        if unsafe { libc::mprotect(map, GUARD, libc::PROT_NONE) } != 0 {
            return Err(Errno::last());
        }
        Ok(stack)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the child that used it has exec'd or
        // exited (CLONE_VFORK), so nothing runs on it any more.
        unsafe { libc::munmap(self.map, CHILD_STACK + GUARD) };
    }
}

/// `clone3(args)`; the child calls `spawn_child(ctx)` on `args.stack` and never returns here.
#[cfg(target_arch = "x86_64")]
fn clone3_vfork(args: &CloneArgs, ctx: &mut ChildContext) -> Result<libc::pid_t, Errno> {
    let ret: i64;
    // SAFETY: clone3 with CLONE_VM | CLONE_VFORK and a stack of its own: the kernel starts the
    // child at the instruction after `syscall` with rsp at the top of `args.stack` (16-byte
    // aligned: page-aligned mapping) and rax = 0; it jumps to `spawn_child(ctx)` (r12, r13 are
    // preserved into the child), which never returns (`ud2` guards that). The parent continues
    // with rax = pid or -errno once the child has exec'd or exited; rcx and r11 are clobbered by
    // `syscall`. `args` and `ctx` outlive the call; `ctx` is written by the child while we are
    // suspended, so the asm is not marked `nomem`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") ctx as *mut ChildContext,
            in("r13") spawn_child as extern "C" fn(*mut ChildContext) -> ! as usize,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        Err(Errno::from_raw(-ret as i32))
    } else {
        Ok(ret as libc::pid_t)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn clone3_vfork(_args: &CloneArgs, _ctx: &mut ChildContext) -> Result<libc::pid_t, Errno> {
    Err(Errno::ENOSYS)
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
