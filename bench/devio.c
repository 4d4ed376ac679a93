/* devio: the I/O load of bench/devices.py, built static (gcc -static -O2) so
 * the same binary runs on the host, in a pyxen guest and in a QEMU guest.
 *
 *   devio randread PATH SECONDS      4 KiB reads at random aligned offsets with
 *                                    O_DIRECT, one at a time, for SECONDS;
 *                                    prints "ops=N secs=S iops=I"
 *   devio send HOST PORT MIB         connects over TCP and sends MIB blocks of
 *                                    1 MiB (a fixed LCG pattern, the block
 *                                    number in its first 8 bytes) in 1 MiB
 *                                    writes, then waits for the receiver to
 *                                    close; prints "bytes=N secs=S mbps=M"
 *
 * Few system calls on purpose: each one traps to pyxen in a pyxen guest. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (1 << 20)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int randread(const char *path, double seconds)
{
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) { perror(path); return 1; }
    off_t size = lseek(fd, 0, SEEK_END);
    uint64_t blocks = size / 4096;
    if (blocks == 0) { fprintf(stderr, "%s: empty\n", path); return 1; }
    void *buf;
    if (posix_memalign(&buf, 4096, 4096)) return 1;
    uint64_t x = 88172645463325252ULL, ops = 0;
    double t0 = now(), t = t0;
    while (t - t0 < seconds) {
        for (int i = 0; i < 64; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (pread(fd, buf, 4096, (off_t)(x % blocks) * 4096) != 4096) {
                perror("pread");
                return 1;
            }
        }
        ops += 64;
        t = now();
    }
    printf("ops=%llu secs=%.3f iops=%.1f\n", (unsigned long long)ops, t - t0, ops / (t - t0));
    return 0;
}

static int sendall(int s, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(s, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            perror("write");
            return -1;
        }
        p += k;
        n -= k;
    }
    return 0;
}

static int tcpsend(const char *host, int port, long mib)
{
    uint64_t *blk = malloc(BLOCK), x = 1;
    for (size_t i = 0; i < BLOCK / 8; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        blk[i] = x;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 1; }
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
    double t0 = now();
    for (long i = 0; i < mib; i++) {
        blk[0] = (uint64_t)i;
        if (sendall(s, (const char *)blk, BLOCK) < 0) return 1;
    }
    shutdown(s, SHUT_WR);
    char c;
    while (read(s, &c, 1) > 0)
        ;
    double dt = now() - t0;
    printf("bytes=%ld secs=%.3f mbps=%.1f\n", mib * BLOCK, dt, mib * BLOCK / dt / 1e6);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "randread"))
        return randread(argv[2], atof(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "send"))
        return tcpsend(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: devio randread PATH SECONDS | devio send HOST PORT MIB\n");
    return 2;
}
