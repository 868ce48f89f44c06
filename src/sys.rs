//! The raw libc calls the crate makes, each behind a small safe wrapper (as toybox's
//! `xwrap.c`): Rust types in, the return value checked, an `io::Result` out. Every
//! `unsafe` block of the crate is here, with the reason it is sound.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `Err(errno)` for a negative return value.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor a system call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open/openat/socket call of this
    // thread and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `open(2)`; `mode` is used with `O_CREAT`.
pub fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string alive for the call.
    check(unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) }).map(owned)
}

/// `openat(2)` relative to `dir`; `mode` is used with `O_CREAT`.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string, both alive
    // for the call.
    check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) })
        .map(owned)
}

/// `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: as for `openat`.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `fstat(2)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain integers, so all zeroes is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` a valid out-buffer, both alive for the call.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`: a symlink's own status.
pub fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `name` NUL-terminated and `st` a valid out-buffer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `fchown(2)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `fd` is open; the call takes no pointers.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `fchmod(2)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is open; the call takes no pointers.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// `fsync(2)`.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is open; the call takes no pointers.
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// `renameat(2)` within one directory.
pub fn renameat(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is open; both names are NUL-terminated and alive for the call.
    check(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
        .map(drop)
}

/// `unlinkat(2)` of a file entry (not a directory).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is open; `name` is NUL-terminated and alive for the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// `unlink(2)`: removes a file entry (a symlink itself, never its target).
pub fn unlink(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string alive for the call.
    check(unsafe { libc::unlink(path.as_ptr()) }).map(drop)
}

/// `rmdir(2)`: removes an empty directory.
pub fn rmdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string alive for the call.
    check(unsafe { libc::rmdir(path.as_ptr()) }).map(drop)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `EWOULDBLOCK` when another holder has it.
pub fn flock_exclusive_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is open; the call takes no pointers.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).map(drop)
}

/// `geteuid(2)`.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sets `O_NONBLOCK` on a descriptor (its other status flags are cleared, as
/// `F_SETFL` does).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is open; F_SETFL takes an integer argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }).map(drop)
}

/// `poll(2)` on one descriptor: whether any of `events` became ready within `timeout_ms`.
pub fn poll_one(fd: BorrowedFd<'_>, events: libc::c_short, timeout_ms: libc::c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, alive for the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) == 1 }
}

/// Sends `signal` to every process of group `pgid`.
pub fn kill_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers; a negative pid names a process group.
    check(unsafe { libc::kill(-(pgid as libc::pid_t), signal) }).map(drop)
}

/// A signal set holding `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset then initialises it, and sigaddset only
    // sets bits of the set it is given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks the signals of `set` in the calling thread (threads it starts inherit it).
pub fn block_signals(set: &libc::sigset_t) {
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
}

/// Waits for one of the (blocked) signals of `set`.
pub fn sigwait(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set and `signal` a valid out-pointer.
    match unsafe { libc::sigwait(set, &mut signal) } {
        0 => Ok(signal),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Sets `CLOCK_REALTIME` to `secs` seconds after the epoch.
pub fn set_realtime_clock(secs: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs as _,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec alive for the call.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }).map(drop)
}

/// Fills `buf` from the kernel's random pool without blocking; whether it was filled.
pub fn getrandom(buf: &mut [u8]) -> bool {
    // SAFETY: `buf` is valid for writes of its length; GRND_NONBLOCK never blocks.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    n >= 0 && n as usize == buf.len()
}

/// `mount(from, to, NULL, MS_BIND | MS_REC, NULL)`: a recursive bind mount.
pub fn bind_mount_recursive(from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated and alive for the call; a null file system
    // type and data are allowed for MS_BIND.
    check(unsafe {
        libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// `chroot(2)`.
pub fn chroot(dir: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is NUL-terminated and alive for the call.
    check(unsafe { libc::chroot(dir.as_ptr()) }).map(drop)
}

/// `socket(2)`.
pub fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    protocol: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    check(unsafe { libc::socket(domain, kind, protocol) }).map(owned)
}

/// `setsockopt(2)` with `value` as the option's bytes. `T` is a plain C value (an int, a
/// `timeval`, a `linger`).
pub fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, alive for the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A netlink address with every field zero but the family (the kernel, or "any port").
pub fn netlink_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers; all zeroes is a valid value.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    address
}

const NETLINK_ADDRESS_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;

/// `bind(2)` of a netlink socket.
pub fn bind_netlink(fd: BorrowedFd<'_>, address: &libc::sockaddr_nl) -> io::Result<()> {
    // SAFETY: the pointer and length describe `address`, alive for the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (address as *const libc::sockaddr_nl).cast(),
            NETLINK_ADDRESS_LEN,
        )
    })
    .map(drop)
}

/// `getsockname(2)` of a netlink socket; `None` when the answer is not a netlink address.
pub fn netlink_name(fd: BorrowedFd<'_>) -> io::Result<Option<libc::sockaddr_nl>> {
    let mut address = netlink_address();
    let mut len = NETLINK_ADDRESS_LEN;
    // SAFETY: the pointers describe `address` and its length, alive for the call.
    check(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut address as *mut libc::sockaddr_nl).cast(),
            &mut len,
        )
    })?;
    let is_netlink = address.nl_family == libc::AF_NETLINK as libc::sa_family_t;
    Ok((len == NETLINK_ADDRESS_LEN && is_netlink).then_some(address))
}

/// `sendto(2)` of one datagram to a netlink address; the bytes sent.
pub fn sendto_netlink(
    fd: BorrowedFd<'_>,
    datagram: &[u8],
    to: &libc::sockaddr_nl,
) -> io::Result<usize> {
    // SAFETY: the pointers and lengths describe `datagram` and `to`, alive for the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            datagram.as_ptr().cast(),
            datagram.len(),
            0,
            (to as *const libc::sockaddr_nl).cast(),
            NETLINK_ADDRESS_LEN,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// `recvfrom(2)` with `MSG_TRUNC` into the spare capacity of `buf` (cleared first): the
/// datagram's full length (more than `buf.capacity()` when it was cut; `buf` then holds
/// what fitted) and the sender's port id.
pub fn recvfrom_netlink(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<(usize, u32)> {
    buf.clear();
    let room = buf.capacity();
    let mut sender = netlink_address();
    let mut sender_len = NETLINK_ADDRESS_LEN;
    // SAFETY: `buf` owns `room` bytes of spare capacity starting at its pointer; `sender`
    // and `sender_len` are ours; all stay alive for the call.
    let got = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            room,
            libc::MSG_TRUNC,
            (&mut sender as *mut libc::sockaddr_nl).cast(),
            &mut sender_len,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    // SAFETY: the kernel wrote the first min(got, room) bytes, all within the capacity.
    unsafe { buf.set_len(got.min(room)) };
    Ok((got, sender.nl_pid))
}

/// `recv(2)` of one datagram into `buf`: the bytes received.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length and alive for the call.
    let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(got as usize)
    }
}

/// `gethostname(2)`: the kernel's host name (of this UTS namespace) as bytes.
pub fn gethostname() -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of its length and alive for the call; the last
    // byte stays 0 (the length passed is one less), so the name is always terminated.
    check(unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) })?;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(buf[..len].to_vec())
}

/// `sethostname(2)`.
pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`, alive for the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// A non-blocking `MSG_PEEK` read of one byte from socket `fd`, leaving it in place: 0
/// means the peer closed its side. `fd` is a number, not a borrow, so a caller may ask
/// while it writes to the same stream; the call only reads, and a stale number fails
/// with `EBADF`.
#[cfg(feature = "emulator")]
pub fn peek_nonblocking(fd: std::os::fd::RawFd) -> io::Result<usize> {
    let mut byte = [0u8; 1];
    // SAFETY: `byte` is a one-byte buffer alive for the call; recv touches no other
    // memory whatever `fd` is.
    let n = unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `_IO('N', 0x40)`: the namespace id of an NVMe block device.
const NVME_IOCTL_ID: u32 = 0x4E40;
/// `_IOWR('N', 0x41, struct nvme_admin_cmd)` (72 bytes).
const NVME_IOCTL_ADMIN_CMD: u32 = 0xC048_4E41;

/// `struct nvme_admin_cmd` (= `nvme_passthru_cmd`) of `<linux/nvme_ioctl.h>`.
#[repr(C)]
#[derive(Default)]
struct NvmeAdminCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

/// `ioctl(NVME_IOCTL_ID)`: the namespace id of an NVMe namespace block device.
pub fn nvme_namespace_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument and returns the namespace id or -1; `fd` is
    // open for the whole call.
    let nsid = check(unsafe { libc::ioctl(fd.as_raw_fd(), NVME_IOCTL_ID as _) })?;
    if nsid == 0 {
        return Err(io::Error::other("namespace id 0"));
    }
    Ok(nsid as u32)
}

/// `ioctl(NVME_IOCTL_ADMIN_CMD)` of an admin command that reads `buf.len()` bytes into
/// `buf` (Identify): `opcode` for namespace `nsid` with command dword 10 `cdw10`. A
/// non-zero NVMe status is an error too.
pub fn nvme_admin_read(
    fd: BorrowedFd<'_>,
    opcode: u8,
    nsid: u32,
    cdw10: u32,
    buf: &mut [u8],
) -> io::Result<()> {
    let data_len =
        u32::try_from(buf.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut cmd = NvmeAdminCmd {
        opcode,
        nsid,
        addr: buf.as_mut_ptr() as u64,
        data_len,
        cdw10,
        ..NvmeAdminCmd::default()
    };
    // SAFETY: `cmd` is the kernel's 72-byte `struct nvme_admin_cmd`; `addr` points at
    // `buf`, which is `data_len` bytes long and outlives the call; the kernel writes at
    // most `data_len` bytes there and fills `cmd.result`.
    let status = check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            NVME_IOCTL_ADMIN_CMD as _,
            &mut cmd as *mut NvmeAdminCmd,
        )
    })?;
    if status != 0 {
        return Err(io::Error::other(format!("NVMe status {:#x}", status)));
    }
    Ok(())
}

// Block devices and the file systems on them: <linux/fs.h>, <linux/blkpg.h>,
// <linux/ext4.h> (fs/ext4/ext4.h) and <xfs/xfs_fs.h>.
/// `_IO(0x12, 104)`: the logical sector size (an int).
const BLKSSZGET: u32 = 0x1268;
/// `_IOR(0x12, 114, size_t)`: the size in bytes (a u64).
const BLKGETSIZE64: u32 = 0x8008_1272;
/// `_IO(0x12, 95)`: re-read the partition table.
const BLKRRPART: u32 = 0x125f;
/// `_IO(0x12, 105)`: partition operations, argument `struct blkpg_ioctl_arg`.
const BLKPG: u32 = 0x1269;
/// `BLKPG_RESIZE_PARTITION` of `struct blkpg_ioctl_arg.op`.
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
/// `_IOW('f', 16, __u64)`: grow a mounted ext4 file system to this many blocks.
const EXT4_IOC_RESIZE_FS: u32 = 0x4008_6610;
/// `_IOR('X', 100, struct xfs_fsop_geom_v1)` (112 bytes).
const XFS_IOC_FSGEOMETRY_V1: u32 = 0x8070_5864;
/// `_IOW('X', 110, struct xfs_growfs_data)` (16 bytes).
const XFS_IOC_FSGROWFSDATA: u32 = 0x4010_586e;
/// The size of `struct xfs_fsop_geom_v1`.
pub const XFS_GEOMETRY_V1_BYTES: usize = 112;

/// `struct blkpg_partition` of `<linux/blkpg.h>`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg` of `<linux/blkpg.h>`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct xfs_growfs_data` of `<xfs/xfs_fs.h>`.
#[repr(C)]
struct XfsGrowfsData {
    newblocks: u64,
    imaxpct: u32,
}

/// Opens a block device with `O_DIRECT` (reads and writes bypass the page cache, so what
/// is read is what is on the disk), read-only or read-write.
pub fn open_direct(path: &std::path::Path, writable: bool) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
}

/// `ioctl(BLKGETSIZE64)`: a block device's size in bytes.
pub fn block_device_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 into `value`, which outlives the call; `fd` is
    // open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64 as _, &mut value as *mut u64) })?;
    Ok(value)
}

/// `ioctl(BLKSSZGET)`: a block device's logical sector size in bytes.
pub fn logical_sector_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into `value`, which outlives the call; `fd` is open.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            BLKSSZGET as _,
            &mut value as *mut libc::c_int,
        )
    })?;
    Ok(value as u32)
}

/// `ioctl(BLKPG, BLKPG_RESIZE_PARTITION)` on a whole disk: partition `number` now spans
/// `length` bytes from byte `start` (works while the partition is mounted).
pub fn blkpg_resize_partition(
    fd: BorrowedFd<'_>,
    number: u32,
    start: u64,
    length: u64,
) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the partition it points to have the kernel's layout
    // (<linux/blkpg.h>) and outlive the call; `fd` is open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), BLKPG as _, &mut arg as *mut BlkpgIoctlArg) })
        .map(drop)
}

/// `ioctl(BLKRRPART)`: the kernel re-reads a disk's whole table (fails while any of its
/// partitions is in use).
pub fn reread_partition_table(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; `fd` is open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), BLKRRPART as _, 0) }).map(drop)
}

/// `ioctl(EXT4_IOC_RESIZE_FS)` on a mounted ext4 file system (`fd` any file or directory
/// in it): grow it to `blocks` blocks.
pub fn ext4_resize_fs(fd: BorrowedFd<'_>, blocks: u64) -> io::Result<()> {
    let mut value = blocks;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 from `value`, which outlives the call; `fd`
    // is open.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            EXT4_IOC_RESIZE_FS as _,
            &mut value as *mut u64,
        )
    })
    .map(drop)
}

/// `ioctl(XFS_IOC_FSGEOMETRY_V1)` on a mounted xfs file system: the raw
/// `struct xfs_fsop_geom_v1` (native byte order).
pub fn xfs_geometry_v1(fd: BorrowedFd<'_>) -> io::Result<[u8; XFS_GEOMETRY_V1_BYTES]> {
    let mut geometry = [0u8; XFS_GEOMETRY_V1_BYTES];
    // SAFETY: the kernel writes the 112-byte structure into `geometry`, which is that big
    // and outlives the call; `fd` is open.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            XFS_IOC_FSGEOMETRY_V1 as _,
            geometry.as_mut_ptr(),
        )
    })?;
    Ok(geometry)
}

/// `ioctl(XFS_IOC_FSGROWFSDATA)` on a mounted xfs file system: grow its data section to
/// `newblocks` blocks, keeping `imaxpct`.
pub fn xfs_grow_data(fd: BorrowedFd<'_>, newblocks: u64, imaxpct: u32) -> io::Result<()> {
    let mut arg = XfsGrowfsData { newblocks, imaxpct };
    // SAFETY: `arg` has the kernel's `struct xfs_growfs_data` layout and outlives the
    // call; `fd` is open.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            XFS_IOC_FSGROWFSDATA as _,
            &mut arg as *mut XfsGrowfsData,
        )
    })
    .map(drop)
}

/// `mknod(2)` of a block device node with permission bits `mode` for the raw `dev_t` `dev`.
pub fn mknod_block(path: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string alive for the call.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | mode, dev as libc::dev_t) }).map(drop)
}

/// Sends `signal` to this process (a test hook's crash).
#[cfg(feature = "test-hooks")]
pub fn kill_self(signal: libc::c_int) {
    // SAFETY: kill and getpid take no pointers.
    unsafe {
        libc::kill(libc::getpid(), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn files_by_descriptor() {
        let dir = std::env::temp_dir();
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let fd = open(&c, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0).unwrap();
        let st = fstat(fd.as_fd()).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
        let missing = c"gce-guest-sys-test-no-such-entry";
        let e = fstatat_nofollow(fd.as_fd(), missing).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(open(missing, libc::O_RDONLY, 0).is_err());
    }

    #[test]
    fn signal_sets_hold_what_was_added() {
        let set = sigset(&[libc::SIGHUP]);
        // SAFETY: `set` is initialised.
        assert_eq!(unsafe { libc::sigismember(&set, libc::SIGHUP) }, 1);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sigismember(&set, libc::SIGTERM) }, 0);
        let mut buf = [0u8; 8];
        assert!(getrandom(&mut buf));
    }

    #[test]
    fn the_nvme_admin_command_has_the_kernel_layout() {
        // struct nvme_admin_cmd is 72 bytes; _IOWR('N', 0x41, it) and _IO('N', 0x40).
        assert_eq!(std::mem::size_of::<NvmeAdminCmd>(), 72);
        let iowr = (3u32 << 30) | (72 << 16) | ((b'N' as u32) << 8) | 0x41;
        assert_eq!(NVME_IOCTL_ADMIN_CMD, iowr);
        assert_eq!(NVME_IOCTL_ID, ((b'N' as u32) << 8) | 0x40);
        let cmd = NvmeAdminCmd::default();
        let base = &cmd as *const _ as usize;
        assert_eq!(&cmd.addr as *const _ as usize - base, 24);
        assert_eq!(&cmd.data_len as *const _ as usize - base, 36);
        assert_eq!(&cmd.cdw10 as *const _ as usize - base, 40);
        assert_eq!(&cmd.result as *const _ as usize - base, 68);
    }

    #[test]
    fn the_disk_ioctls_have_the_kernel_numbers_and_layouts() {
        // _IOC(dir, type, nr, size) with _IOC_WRITE = 1, _IOC_READ = 2.
        let ioc = |dir: u32, kind: u8, nr: u32, size: usize| {
            (dir << 30) | ((size as u32) << 16) | (u32::from(kind) << 8) | nr
        };
        assert_eq!(BLKSSZGET, ioc(0, 0x12, 104, 0));
        assert_eq!(BLKGETSIZE64, ioc(2, 0x12, 114, 8));
        assert_eq!(BLKRRPART, ioc(0, 0x12, 95, 0));
        assert_eq!(BLKPG, ioc(0, 0x12, 105, 0));
        assert_eq!(EXT4_IOC_RESIZE_FS, ioc(1, b'f', 16, 8));
        assert_eq!(
            XFS_IOC_FSGEOMETRY_V1,
            ioc(2, b'X', 100, XFS_GEOMETRY_V1_BYTES)
        );
        assert_eq!(
            XFS_IOC_FSGROWFSDATA,
            ioc(1, b'X', 110, std::mem::size_of::<XfsGrowfsData>())
        );
        assert_eq!(std::mem::size_of::<XfsGrowfsData>(), 16);
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }
}
