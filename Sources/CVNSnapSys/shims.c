#define _GNU_SOURCE
#include "CVNSnapSys.h"

#include <errno.h>
#include <string.h>

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
