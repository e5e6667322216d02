/* udpcat: the test guest's UDP workload (busybox nc speaks no UDP).
 *
 *   udpcat send HOST PORT COUNT PACE_MS   sends "seq 1" ... "seq COUNT", one datagram each, PACE_MS apart
 *                                         (paced by spinning on the clock: a TCG guest's sleeps are coarse),
 *                                         then "end COUNT" five times, 200 ms apart
 *   udpcat recv PORT                      counts "seq K" datagrams (expects 1, 2, 3, ... in order) and on
 *                                         the first "end N" prints whether every one arrived
 *
 * Progress and verdict lines go to stdout as "VNSNAP ..." lines. Nothing is retransmitted: a datagram lost
 * is lost, which is the point (a restored run is complete only if the frames in flight are replayed). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Paces by spinning on the clock: a TCG guest's sleeps last a timer tick or more, far longer than asked. */
static void spin_until(long long deadline) {
    while (now_ns() < deadline) {
    }
}

static int send_all(const char *host, int port, long count, long pace) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, host, &to.sin_addr) != 1 || connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        printf("VNSNAP error role=udpsource msg=cannot_reach_%s:%d\n", host, port);
        return 1;
    }
    char line[64];
    long long next = now_ns();
    for (long k = 1; k <= count; k++) {
        int n = snprintf(line, sizeof(line), "seq %ld\n", k);
        if (send(fd, line, n, 0) < 0) {
            pause_ms(10); /* ARP not resolved yet, or a full queue: that datagram is lost, as UDP goes */
        }
        if (k % 100 == 0) {
            printf("VNSNAP udp sent=%ld\n", k);
            fflush(stdout);
        }
        next += pace * 1000000LL;
        spin_until(next);
    }
    for (int r = 0; r < 5; r++) {
        int n = snprintf(line, sizeof(line), "end %ld\n", count);
        send(fd, line, n, 0);
        pause_ms(200);
    }
    return 0;
}

static int receive_all(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof(me)) != 0) {
        printf("VNSNAP error role=udpsink msg=cannot_bind_%d\n", port);
        return 1;
    }
    long want = 0, got = 0, missing = 0;
    char buffer[2048];
    for (;;) {
        ssize_t n = recv(fd, buffer, sizeof(buffer) - 1, 0);
        if (n <= 0) {
            continue;
        }
        buffer[n] = 0;
        long k;
        if (sscanf(buffer, "seq %ld", &k) == 1) {
            if (k > want) {
                missing += k - want - 1;
                want = k;
                got++;
                if (got % 100 == 0) {
                    printf("VNSNAP udp got=%ld\n", got);
                    fflush(stdout);
                }
            }
        } else if (sscanf(buffer, "end %ld", &k) == 1) {
            if (want < k) {
                missing += k - want;
            }
            printf("VNSNAP udpsink got=%ld missing=%ld verdict=%s\n", got, missing,
                   missing == 0 && got == k ? "ok" : "bad");
            fflush(stdout);
            return 0;
        }
    }
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "send") == 0) {
        return send_all(argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]));
    }
    if (argc == 3 && strcmp(argv[1], "recv") == 0) {
        return receive_all(atoi(argv[2]));
    }
    fprintf(stderr, "usage: udpcat send HOST PORT COUNT PACE_MS | udpcat recv PORT\n");
    return 2;
}
