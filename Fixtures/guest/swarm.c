/* swarm: the test guest's many-to-many download (a stand-in for BitTorrent): rank 0 seeds a file in pieces, the
 * other ranks download pieces from every rank in parallel, each piece from whoever has it.
 *
 *   swarm RANK HOSTS PORT PIECES PIECE_KIB PACE_MS [PROGRESS]   HOSTS = the ranks' addresses, comma-separated,
 *                                                               rank 0 first; a progress line every PROGRESS
 *                                                               pieces (default: every tenth of the file)
 *
 * Every rank serves on PORT: a request for piece k is answered with the piece if this rank has it, else with a
 * refusal. Every rank but the seed connects to every other rank and keeps one request outstanding on each
 * connection, for a missing piece nobody is fetching yet, tried on the peers in turn: early on only the seed has
 * pieces, soon the downloaders trade among themselves. The seed answers at most one request per PACE_MS on each
 * connection (an upload limit; 0: none). The piece hashes are known in advance (the "torrent": every piece is
 * generated from its index); a piece that does not match is counted bad and fetched again. A downloader with
 * every piece reports the whole file's hash, how many pieces came from the seed and from peers, and keeps
 * serving. Progress and the verdict go to stdout as "VNSNAP swarm ..." lines. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { REQUEST = 0x53520001, PIECE = 0x53500002, REFUSED = 0x534e0003, MAX_RANKS = 64, MAX_PIECES = 65536 };

/* A connection: one we serve (a request waiting until `due`), or one we download on (`asked` outstanding). */
struct link {
    int fd;
    int peer;         /* the rank at the other end (downloads), -1 for a served one */
    int32_t asked;    /* downloads: the piece requested, -1 for none */
    int32_t pending;  /* served: the piece asked and not answered yet, -1 for none */
    long long due;    /* served: when the answer may go (the seed's upload limit); downloads: next ask after a refusal */
    uint8_t *in;      /* bytes read so far of the current message */
    size_t have, want;
};

static int rank_, ranks_, pieces_;
static size_t piece_size_;
static uint8_t *file_;    /* the pieces, in order */
static uint8_t *owned_;   /* owned_[k]: this rank has piece k */
static uint8_t *fetching_; /* fetching_[k]: a request for k is outstanding */
static uint64_t *hashes_;  /* the "torrent": every piece's FNV-1a hash */

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static uint64_t fnv(const uint8_t *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    return h;
}

static void generate(int k, uint8_t *out) {
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(k + 1);
    for (size_t i = 0; i < piece_size_; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (uint8_t)(x >> 32);
    }
}

static void fail(const char *why) {
    printf("VNSNAP swarm rank=%d verdict=bad reason=%s\n", rank_, why);
    fflush(stdout);
    exit(1);
}

static void write_all(int fd, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t sent = send(fd, p, n, 0);
        if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd w = {fd, POLLOUT, 0};
            poll(&w, 1, 100);
            continue;
        }
        if (sent <= 0) {
            fail("send_failed");
        }
        p += sent;
        n -= (size_t)sent;
    }
}

static void send_header(int fd, uint32_t kind, uint32_t piece) {
    uint32_t h[3] = {htonl(kind), htonl(piece), htonl(kind ^ piece)};
    write_all(fd, h, sizeof(h));
}

/* Reads what is there of the current message; returns 1 once it is whole (header, and a piece's bytes). */
static int read_message(struct link *l) {
    for (;;) {
        ssize_t n = recv(l->fd, l->in + l->have, l->want - l->have, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return 0;
        }
        if (n <= 0) {
            fail(l->peer >= 0 ? "download_connection_lost" : "served_connection_lost");
        }
        l->have += (size_t)n;
        if (l->have < l->want) {
            continue;
        }
        uint32_t *h = (uint32_t *)l->in;
        uint32_t kind = ntohl(h[0]), piece = ntohl(h[1]);
        if (ntohl(h[2]) != (kind ^ piece) || piece >= (uint32_t)pieces_) {
            fail("corrupt_message");
        }
        if (kind == PIECE && l->want == 12 && l->peer >= 0) {
            l->want = 12 + piece_size_;
            continue;
        }
        return 1;
    }
}

static void reset(struct link *l) {
    l->have = 0;
    l->want = 12;
}

static int connect_to(const char *host, int port) {
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        fail("bad_host");
    }
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&to, sizeof(to)) == 0) {
            return fd;
        }
        close(fd);
        struct timespec t = {0, 200000000L};
        nanosleep(&t, NULL);
    }
}

/* The next missing piece nobody fetches, from a starting point that differs per rank and per ask. */
static int choose(unsigned *seed) {
    int start = (int)(rand_r(seed) % (unsigned)pieces_);
    for (int i = 0; i < pieces_; i++) {
        int k = (start + i) % pieces_;
        if (!owned_[k] && !fetching_[k]) {
            return k;
        }
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: swarm RANK HOSTS PORT PIECES PIECE_KIB PACE_MS [PROGRESS]\n");
        return 2;
    }
    rank_ = atoi(argv[1]);
    char *hosts[MAX_RANKS];
    for (char *h = strtok(argv[2], ","); h != NULL && ranks_ < MAX_RANKS; h = strtok(NULL, ",")) {
        hosts[ranks_++] = h;
    }
    int port = atoi(argv[3]);
    pieces_ = atoi(argv[4]);
    piece_size_ = (size_t)atoi(argv[5]) * 1024;
    long long pace = atol(argv[6]);
    /* A piece fits in a socket's buffers: one outstanding per connection, so a send never waits on its reader. */
    if (ranks_ < 2 || rank_ < 0 || rank_ >= ranks_ || pieces_ < 1 || pieces_ > MAX_PIECES || piece_size_ == 0 ||
        piece_size_ > 64 * 1024) {
        fail("bad_arguments");
    }
    file_ = malloc((size_t)pieces_ * piece_size_);
    owned_ = calloc((size_t)pieces_, 1);
    fetching_ = calloc((size_t)pieces_, 1);
    hashes_ = malloc((size_t)pieces_ * sizeof(uint64_t));
    uint64_t expected = 0xcbf29ce484222325ULL;
    for (int k = 0; k < pieces_; k++) {
        generate(k, file_ + (size_t)k * piece_size_);
        hashes_[k] = fnv(file_ + (size_t)k * piece_size_, piece_size_, 0xcbf29ce484222325ULL);
        expected = fnv(file_ + (size_t)k * piece_size_, piece_size_, expected);
        owned_[k] = rank_ == 0;
    }
    if (rank_ != 0) {
        memset(file_, 0, (size_t)pieces_ * piece_size_);
    }

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (listener < 0 || bind(listener, (struct sockaddr *)&me, sizeof(me)) != 0 || listen(listener, 64) != 0) {
        fail("cannot_listen");
    }
    struct link links[2 * MAX_RANKS];
    int count = 0;
    if (rank_ != 0) {
        for (int r = 0; r < ranks_; r++) {
            if (r == rank_) {
                continue;
            }
            int fd = connect_to(hosts[r], port);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            links[count] = (struct link){fd, r, -1, -1, 0, malloc(12 + piece_size_), 0, 12};
            count++;
        }
    }
    printf("VNSNAP swarm rank=%d ranks=%d pieces=%d piece_kib=%zu %s\n", rank_, ranks_, pieces_, piece_size_ / 1024,
           rank_ == 0 ? "seeding" : "downloading");
    fflush(stdout);

    unsigned seed = 7919u * (unsigned)(rank_ + 1);
    int owned = rank_ == 0 ? pieces_ : 0, from_seed = 0, from_peers = 0, bad = 0, reported = rank_ == 0;
    int step = argc == 8 ? atoi(argv[7]) : pieces_ / 10;
    step = step > 0 ? step : 1;
    for (;;) {
        /* Ask on every download link that has nothing outstanding, the peers' turn rotating with the piece. */
        for (int i = 0; i < count; i++) {
            if (links[i].peer < 0 || links[i].asked >= 0 || links[i].due > now_ms()) {
                continue;
            }
            int k = choose(&seed);
            if (k < 0) {
                break;
            }
            links[i].asked = k;
            fetching_[k] = 1;
            send_header(links[i].fd, REQUEST, (uint32_t)k);
        }
        if (owned == pieces_ && !reported) {
            uint64_t digest = fnv(file_, (size_t)pieces_ * piece_size_, 0xcbf29ce484222325ULL);
            printf("VNSNAP swarm rank=%d complete pieces=%d from_seed=%d from_peers=%d bad=%d digest=%016llx "
                   "expected=%016llx verdict=%s\n",
                   rank_, pieces_, from_seed, from_peers, bad, (unsigned long long)digest,
                   (unsigned long long)expected, digest == expected && bad == 0 ? "ok" : "bad");
            fflush(stdout);
            reported = 1;
        }
        struct pollfd fds[2 * MAX_RANKS + 1];
        long long now = now_ms(), wait = 1000;
        for (int i = 0; i < count; i++) {
            fds[i] = (struct pollfd){links[i].fd, POLLIN, 0};
            if (links[i].pending >= 0) {
                fds[i].events = 0;
            }
            if (links[i].pending >= 0 || (links[i].peer >= 0 && links[i].asked < 0 && links[i].due > now)) {
                long long left = links[i].due - now;
                wait = left < wait ? (left > 0 ? left : 0) : wait;
            }
        }
        fds[count] = (struct pollfd){listener, POLLIN, 0};
        poll(fds, (nfds_t)count + 1, (int)wait);
        now = now_ms();
        if ((fds[count].revents & POLLIN) && count < 2 * MAX_RANKS) {
            int fd = accept(listener, NULL, NULL);
            if (fd >= 0) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                links[count] = (struct link){fd, -1, -1, -1, 0, malloc(12), 0, 12};
                count++;
            }
        }
        for (int i = 0; i < count; i++) {
            struct link *l = &links[i];
            if (l->peer < 0 && l->pending >= 0 && l->due <= now) {
                int k = l->pending;
                l->pending = -1;
                if (owned_[k]) {
                    send_header(l->fd, PIECE, (uint32_t)k);
                    write_all(l->fd, file_ + (size_t)k * piece_size_, piece_size_);
                } else {
                    send_header(l->fd, REFUSED, (uint32_t)k);
                }
            }
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)) || !read_message(l)) {
                continue;
            }
            uint32_t *h = (uint32_t *)l->in;
            uint32_t kind = ntohl(h[0]), k = ntohl(h[1]);
            reset(l);
            if (l->peer < 0) {
                if (kind != REQUEST) {
                    fail("unexpected_message_served");
                }
                l->pending = (int32_t)k;
                l->due = rank_ == 0 ? now + pace : now;
                continue;
            }
            if ((int32_t)k != l->asked || (kind != PIECE && kind != REFUSED)) {
                fail("unexpected_answer");
            }
            l->asked = -1;
            fetching_[k] = 0;
            if (kind == REFUSED) {
                l->due = now + 20; /* that peer lacks it: ask it again a little later, others meanwhile */
                continue;
            }
            if (owned_[k]) {
                continue;
            }
            if (fnv(l->in + 12, piece_size_, 0xcbf29ce484222325ULL) != hashes_[k]) {
                bad++;
                continue;
            }
            memcpy(file_ + (size_t)k * piece_size_, l->in + 12, piece_size_);
            owned_[k] = 1;
            owned++;
            if (l->peer == 0) {
                from_seed++;
            } else {
                from_peers++;
            }
            if (owned % step == 0 && owned < pieces_) {
                printf("VNSNAP swarm rank=%d have=%d\n", rank_, owned);
                fflush(stdout);
            }
        }
    }
}
