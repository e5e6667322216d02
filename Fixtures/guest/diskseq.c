/* diskseq: the test guest's disk workload, which shows whether a VM's disk and memory belong to one instant.
 *
 *   diskseq DEVICE COUNT PACE_MS   for k = 1 ... COUNT: checks that block k of DEVICE is still empty and
 *                                  block k-1 holds k-1, then writes k into block k (O_DIRECT | O_SYNC, so the
 *                                  checks read the disk, not the guest's page cache); PACE_MS apart, paced by
 *                                  spinning (a TCG guest's sleeps are coarse); at the end, reads every block
 *                                  back
 *
 * The loop counter lives in memory, the blocks on the disk. A VM restored from memory of one instant and a disk
 * of another fails a check: a disk newer than the memory has block k written already, an older one lacks
 * block k-1. Progress and the verdict go to stdout as "VNSNAP ..." lines. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BLOCK = 4096 };

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The number stored in a block: 0 for an empty (all-zero) block, -1 for anything that is not a record. */
static long read_record(int fd, char *block, long k) {
    if (pread(fd, block, BLOCK, (off_t)k * BLOCK) != BLOCK) {
        return -2;
    }
    long value = 0;
    if (sscanf(block, "diskseq %ld", &value) == 1) {
        return value;
    }
    for (int i = 0; i < BLOCK; i++) {
        if (block[i] != 0) {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        printf("VNSNAP error role=diskseq msg=usage:_diskseq_DEVICE_COUNT_PACE_MS\n");
        return 2;
    }
    long count = atol(argv[2]), pace = atol(argv[3]);
    int fd = open(argv[1], O_RDWR | O_DIRECT | O_SYNC);
    char *block = NULL;
    if (fd < 0 || posix_memalign((void **)&block, BLOCK, BLOCK) != 0) {
        printf("VNSNAP error role=diskseq msg=cannot_open_%s\n", argv[1]);
        return 1;
    }
    long long next = now_ns();
    for (long k = 1; k <= count; k++) {
        long here = read_record(fd, block, k);
        long before = k > 1 ? read_record(fd, block, k - 1) : 0;
        if (here != 0 || before != k - 1) {
            printf("VNSNAP disk verdict=mismatch at=%ld block=%ld previous=%ld\n", k, here, before);
            fflush(stdout);
            return 1;
        }
        memset(block, 0, BLOCK);
        snprintf(block, BLOCK, "diskseq %ld\n", k);
        if (pwrite(fd, block, BLOCK, (off_t)k * BLOCK) != BLOCK) {
            printf("VNSNAP error role=diskseq msg=write_failed_at_%ld\n", k);
            return 1;
        }
        if (k % 100 == 0) {
            printf("VNSNAP disk wrote=%ld\n", k);
            fflush(stdout);
        }
        next += pace * 1000000LL;
        while (now_ns() < next) {
        }
    }
    /* The whole run read back: a disk that lost an earlier write (a layer merged away wrongly) shows here. */
    for (long k = 1; k <= count; k++) {
        long value = read_record(fd, block, k);
        if (value != k) {
            printf("VNSNAP disk verdict=lost at=%ld block=%ld\n", k, value);
            fflush(stdout);
            return 1;
        }
    }
    printf("VNSNAP disk verdict=ok count=%ld\n", count);
    fflush(stdout);
    return 0;
}
