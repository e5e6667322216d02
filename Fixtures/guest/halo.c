/* halo: the test guest's MPI-style iterative solver (a stand-in for NEMO3D): N ranks, one per VM, on a ring.
 *
 *   halo RANK HOSTS PORT ITERS CELLS REDUCE   HOSTS = the ranks' addresses, comma-separated, rank 0 first
 *
 * The domain is N * CELLS integer cells on a periodic line, CELLS per rank. Every iteration each rank sends its
 * edge cells to both neighbours over TCP, receives their halos and updates every cell from its neighbours (a
 * fixed integer stencil, wrapping arithmetic: the answer is exact). Every REDUCE iterations, and after the last,
 * the ranks sum a checksum around the ring (an all-reduce: every rank learns the total). At the end every rank
 * computes the whole run alone, serially, and compares: a restored run that lost, repeated or reordered a halo
 * ends with another checksum, so it is right or wrong. Every message carries its kind and iteration, checked on
 * arrival. Progress and the verdict go to stdout as "VNSNAP halo ..." lines. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { HALO_RIGHT = 0x48520001, HALO_LEFT = 0x484c0002, REDUCE_STEP = 0x52440003, MAX_RANKS = 64 };

/* One message on the ring: what it is, for which iteration, and its value. */
struct message {
    uint32_t kind, iter, value, check;
};

static uint32_t initial(uint32_t g) {
    uint32_t x = g * 0x9e3779b9u + 0x7f4a7c15u;
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    return x;
}

/* The stencil: every cell from itself and its two neighbours, and the iteration (so no fixed point is reached). */
static uint32_t stencil(uint32_t left, uint32_t self, uint32_t right, uint32_t iter) {
    return left * 3u + self * 5u + right * 7u + iter;
}

static uint32_t checksum(const uint32_t *cells, uint32_t count, uint32_t first) {
    uint32_t sum = 0;
    for (uint32_t i = 0; i < count; i++) {
        sum += cells[i] * (first + i + 1) ^ (cells[i] >> 7);
    }
    return sum;
}

static void die(int rank, const char *why) {
    printf("VNSNAP halo rank=%d verdict=bad reason=%s\n", rank, why);
    fflush(stdout);
    exit(1);
}

/* Sends or receives all `n` bytes; a connection that fails ends the run. */
static void transfer(int fd, int rank, void *data, size_t n, int sending) {
    char *p = data;
    while (n > 0) {
        ssize_t done = sending ? send(fd, p, n, 0) : recv(fd, p, n, 0);
        if (done <= 0) {
            die(rank, sending ? "send_failed" : "connection_lost");
        }
        p += done;
        n -= (size_t)done;
    }
}

static void send_message(int fd, int rank, uint32_t kind, uint32_t iter, uint32_t value) {
    struct message m = {htonl(kind), htonl(iter), htonl(value), htonl(kind ^ iter ^ value)};
    transfer(fd, rank, &m, sizeof(m), 1);
}

/* Reads the next message, which must be `kind` for `iter`; returns its value. */
static uint32_t receive_message(int fd, int rank, uint32_t kind, uint32_t iter) {
    struct message m;
    transfer(fd, rank, &m, sizeof(m), 0);
    uint32_t got_kind = ntohl(m.kind), got_iter = ntohl(m.iter), value = ntohl(m.value);
    if (ntohl(m.check) != (got_kind ^ got_iter ^ value)) {
        die(rank, "corrupt_message");
    }
    if (got_kind != kind || got_iter != iter) {
        printf("VNSNAP halo rank=%d verdict=bad reason=out_of_order want=%08x/%u got=%08x/%u\n", rank, kind, iter,
               got_kind, got_iter);
        fflush(stdout);
        exit(1);
    }
    return value;
}

static void no_delay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Connects to the right neighbour (retried: it may not listen yet) and accepts the left one. */
static void connect_ring(int rank, const char *right_host, int port, int *left_fd, int *right_fd) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (listener < 0 || bind(listener, (struct sockaddr *)&me, sizeof(me)) != 0 || listen(listener, 4) != 0) {
        die(rank, "cannot_listen");
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, right_host, &to.sin_addr) != 1) {
        die(rank, "bad_host");
    }
    for (;;) {
        *right_fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(*right_fd, (struct sockaddr *)&to, sizeof(to)) == 0) {
            break;
        }
        close(*right_fd);
        struct timespec t = {0, 200000000L};
        nanosleep(&t, NULL);
    }
    *left_fd = accept(listener, NULL, NULL);
    if (*left_fd < 0) {
        die(rank, "cannot_accept");
    }
    close(listener);
    no_delay(*left_fd);
    no_delay(*right_fd);
}

/* The whole run alone: the checksum a correct distributed run ends with. */
static uint32_t reference(uint32_t ranks, uint32_t cells, uint32_t iters) {
    uint32_t total = ranks * cells;
    uint32_t *u = malloc(total * sizeof(uint32_t)), *next = malloc(total * sizeof(uint32_t));
    for (uint32_t g = 0; g < total; g++) {
        u[g] = initial(g);
    }
    for (uint32_t t = 1; t <= iters; t++) {
        for (uint32_t g = 0; g < total; g++) {
            next[g] = stencil(u[(g + total - 1) % total], u[g], u[(g + 1) % total], t);
        }
        uint32_t *swap = u;
        u = next;
        next = swap;
    }
    uint32_t sum = checksum(u, total, 0);
    free(u);
    free(next);
    return sum;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: halo RANK HOSTS PORT ITERS CELLS REDUCE\n");
        return 2;
    }
    int rank = atoi(argv[1]);
    char *hosts[MAX_RANKS];
    int ranks = 0;
    for (char *h = strtok(argv[2], ","); h != NULL && ranks < MAX_RANKS; h = strtok(NULL, ",")) {
        hosts[ranks++] = h;
    }
    int port = atoi(argv[3]);
    uint32_t iters = (uint32_t)atol(argv[4]), cells = (uint32_t)atol(argv[5]), every = (uint32_t)atol(argv[6]);
    if (ranks < 2 || rank < 0 || rank >= ranks || cells < 1 || iters < 1 || every < 1) {
        die(rank, "bad_arguments");
    }
    int left_fd, right_fd;
    connect_ring(rank, hosts[(rank + 1) % ranks], port, &left_fd, &right_fd);
    printf("VNSNAP halo rank=%d ranks=%d connected\n", rank, ranks);
    fflush(stdout);

    uint32_t first = (uint32_t)rank * cells;
    /* u[0] and u[cells + 1] are the halos. */
    uint32_t *u = calloc(cells + 2, sizeof(uint32_t)), *next = calloc(cells + 2, sizeof(uint32_t));
    for (uint32_t i = 0; i < cells; i++) {
        u[i + 1] = initial(first + i);
    }
    uint32_t sum = 0;
    for (uint32_t t = 1; t <= iters; t++) {
        send_message(right_fd, rank, HALO_RIGHT, t, u[cells]);
        send_message(left_fd, rank, HALO_LEFT, t, u[1]);
        u[0] = receive_message(left_fd, rank, HALO_RIGHT, t);
        u[cells + 1] = receive_message(right_fd, rank, HALO_LEFT, t);
        for (uint32_t i = 1; i <= cells; i++) {
            next[i] = stencil(u[i - 1], u[i], u[i + 1], t);
        }
        uint32_t *swap = u;
        u = next;
        next = swap;
        if (t % every == 0 || t == iters) {
            /* Ring all-reduce: pass partial sums right N-1 times, adding what arrives from the left. */
            uint32_t passing = checksum(u + 1, cells, first);
            sum = passing;
            for (int step = 0; step < ranks - 1; step++) {
                send_message(right_fd, rank, REDUCE_STEP, t, passing);
                passing = receive_message(left_fd, rank, REDUCE_STEP, t);
                sum += passing;
            }
            printf("VNSNAP halo rank=%d iter=%u sum=%08x\n", rank, t, sum);
            fflush(stdout);
        }
    }
    uint32_t expected = reference((uint32_t)ranks, cells, iters);
    printf("VNSNAP halo rank=%d iters=%u sum=%08x expected=%08x verdict=%s\n", rank, iters, sum, expected,
           sum == expected ? "ok" : "bad");
    fflush(stdout);
    /* Stay up so the neighbours' last messages are not answered with resets. */
    for (;;) {
        pause();
    }
}
