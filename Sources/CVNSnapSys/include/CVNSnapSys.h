#ifndef CVNSNAPSYS_H
#define CVNSNAPSYS_H

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

/// Sends `count` (at most 64) datagrams, one iovec each, to one unix socket address with a single
/// sendmmsg(2) call, without blocking. Returns how many were sent, or -1 with errno set.
/// (Glibc's sendmmsg and struct mmsghdr need _GNU_SOURCE, which Swift's Glibc module does not define.)
int vnsnap_sendmmsg_unix(int fd, const struct iovec *iov, unsigned int count, const struct sockaddr_un *to);

/// The receive queue of the unix socket bound at `path`, as the kernel's sock_diag reports it (for a datagram
/// socket: the size of the next queued datagram, 0 when empty). -2 if no such socket, -1 on error (errno set).
long vnsnap_unix_receive_queue(const char *path);

/// The process id of the server listening on the unix stream socket at `path` (SO_PEERCRED of a short
/// connection), or -1 with errno set. Proves which process serves a QMP socket.
int vnsnap_unix_server_pid(const char *path);

/// The process id holding a write lock on the file at `path` (QEMU locks its -pidfile for its lifetime), 0 when
/// nobody holds one, -1 with errno set.
int vnsnap_lock_holder(const char *path);

/// Sets the calling thread's nice value (Linux: per thread), so its work yields the CPU to others'.
/// Returns 0, or -1 with errno set.
int vnsnap_set_thread_nice(int nice);

/// Bytes waiting in socket `fd`'s receive queue (FIONREAD), or -1 with errno.
int vnsnap_bytes_readable(int fd);

/// Releases userfaultfd write protection left on process `pid`'s memory: every range whose mapping is registered
/// for write-protect faults (`uw` in /proc/PID/smaps) is un-protected (waking the threads blocked on it) and
/// unregistered, through the process's own userfaultfd descriptors (pidfd_getfd, root). QEMU 7.2 leaves a guest's RAM
/// so when a background snapshot fails half-way, and its threads then block for good on their next write.
/// Returns the number of ranges released (0: none was protected), or -errno.
int vnsnap_release_write_protection(int pid);

/// Fixes glibc's mmap threshold at `bytes` (mallopt M_MMAP_THRESHOLD), which also stops glibc from raising it to the
/// largest block freed. Returns 1 on success, 0 on failure.
int vnsnap_set_mmap_threshold(int bytes);

#endif
