#define _GNU_SOURCE
#include <sys/ioctl.h>
#include "CVNSnapSys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int vnsnap_sendmmsg_unix(int fd, const struct iovec *iov, unsigned int count, const struct sockaddr_un *to) {
    struct mmsghdr messages[64];
    if (count > 64) {
        count = 64;
    }
    memset(messages, 0, sizeof(struct mmsghdr) * count);
    for (unsigned int i = 0; i < count; i++) {
        messages[i].msg_hdr.msg_name = (void *)to;
        messages[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_un);
        messages[i].msg_hdr.msg_iov = (struct iovec *)&iov[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    return sendmmsg(fd, messages, count, MSG_DONTWAIT);
}

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <unistd.h>

long vnsnap_unix_receive_queue(const char *path) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) {
        return -1;
    }
    struct {
        struct nlmsghdr header;
        struct unix_diag_req request;
    } message;
    memset(&message, 0, sizeof(message));
    message.header.nlmsg_len = sizeof(message);
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.request.sdiag_family = AF_UNIX;
    message.request.udiag_states = 0xffffffff;
    message.request.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &message, sizeof(message), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        close(fd);
        return -1;
    }
    size_t pathLength = strlen(path);
    long found = -2;
    static __thread char buffer[32768];
    for (;;) {
        ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            found = -1;
            break;
        }
        int done = 0;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (unsigned int)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
                done = 1;
                break;
            }
            struct unix_diag_msg *diag = NLMSG_DATA(h);
            int attributesLength = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*diag)));
            const char *name = NULL;
            size_t nameLength = 0;
            long queue = -1;
            for (struct rtattr *a = (struct rtattr *)(diag + 1); RTA_OK(a, attributesLength);
                 a = RTA_NEXT(a, attributesLength)) {
                if (a->rta_type == UNIX_DIAG_NAME) {
                    name = RTA_DATA(a);
                    nameLength = RTA_PAYLOAD(a);
                } else if (a->rta_type == UNIX_DIAG_RQLEN) {
                    struct unix_diag_rqlen *lengths = RTA_DATA(a);
                    queue = lengths->udiag_rqueue;
                }
            }
            if (found == -2 && name != NULL && nameLength >= pathLength && memcmp(name, path, pathLength) == 0 &&
                (nameLength == pathLength || name[pathLength] == '\0')) {
                found = queue;
            }
        }
        if (done) {
            break;
        }
    }
    close(fd);
    return found;
}

int vnsnap_unix_server_pid(const char *path) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof(address));
    address.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(address.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    int result = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length);
    int saved = errno;
    close(fd);
    errno = saved;
    return result == 0 ? credentials.pid : -1;
}

int vnsnap_lock_holder(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    struct flock lock;
    memset(&lock, 0, sizeof(lock));
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    int result = fcntl(fd, F_GETLK, &lock);
    int saved = errno;
    close(fd);
    errno = saved;
    if (result != 0) {
        return -1;
    }
    return lock.l_type == F_UNLCK ? 0 : lock.l_pid;
}

int vnsnap_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}

int vnsnap_bytes_readable(int fd) {
    int available = 0;
    return ioctl(fd, FIONREAD, &available) == 0 ? available : -1;
}

// --- userfaultfd write protection left behind (see the header) -------------------------------------------------

#include <dirent.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>

int vnsnap_release_write_protection(int pid) {
    char path[64];
    // Its userfaultfd descriptors, duplicated into this process.
    int uffds[16];
    int count = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *fds = opendir(path);
    if (fds == NULL) return -errno;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int error = errno;
        closedir(fds);
        return -error;
    }
    struct dirent *entry;
    while ((entry = readdir(fds)) != NULL && count < 16) {
        char link[64], target[64];
        snprintf(link, sizeof link, "/proc/%d/fd/%s", pid, entry->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        if (strcmp(target, "anon_inode:[userfaultfd]") != 0) continue;
        int fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(entry->d_name), 0);
        if (fd >= 0) uffds[count++] = fd;
    }
    closedir(fds);
    close(pidfd);
    // The mappings registered for write-protect faults.
    snprintf(path, sizeof path, "/proc/%d/smaps", pid);
    FILE *smaps = fopen(path, "r");
    if (smaps == NULL) {
        int error = errno;
        for (int i = 0; i < count; i++) close(uffds[i]);
        return -error;
    }
    char line[512];
    unsigned long start = 0, end = 0;
    int released = 0;
    while (fgets(line, sizeof line, smaps) != NULL) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {  // a mapping's first line; its fields follow
            start = a;
            end = b;
        } else if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " uw") != NULL && end > start) {
            for (int i = 0; i < count; i++) {
                struct uffdio_writeprotect wp = {.range = {.start = start, .len = end - start}, .mode = 0};
                if (ioctl(uffds[i], UFFDIO_WRITEPROTECT, &wp) != 0) continue;  // not this descriptor's range
                struct uffdio_range range = {.start = start, .len = end - start};
                (void)ioctl(uffds[i], UFFDIO_UNREGISTER, &range);
                released++;
                break;
            }
        }
    }
    fclose(smaps);
    for (int i = 0; i < count; i++) close(uffds[i]);
    return released;
}

// --- the allocator ---------------------------------------------------------------------------------------------

#include <malloc.h>

int vnsnap_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
