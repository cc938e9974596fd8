/* Launch-latency driver for scripts/bench: times posix_spawn + waitpid of each configuration,
 * interleaved round by round (A B C A B C ...) so that noise on this shared machine hits every
 * configuration alike. Prints one line per sample: "<config index> <nanoseconds> <exit status>".
 * With --gap-ms N it sleeps N ms before every launch (sporadic launches: an idle gap long enough
 * for the kernel's cgroup rwsem to fall back to its slow writer path). */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    /* usage: spawn_bench ROUNDS [--gap-ms N] :: cmd1 args ... :: cmd2 args ... */
    if (argc < 4) {
        fprintf(stderr, "usage: %s ROUNDS [--gap-ms N] :: CMD... [:: CMD...]...\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[1]);
    int first = 2;
    long gap_ms = 0;
    if (strcmp(argv[2], "--gap-ms") == 0) {
        gap_ms = atol(argv[3]);
        first = 4;
    }
    char **cmds[16];
    int n = 0;
    for (int i = first; i < argc && n < 16; i++) {
        if (strcmp(argv[i], "::") == 0) {
            argv[i] = NULL;
            if (i + 1 < argc) cmds[n++] = &argv[i + 1];
        }
    }
    for (int r = 0; r < rounds; r++) {
        for (int c = 0; c < n; c++) {
            pid_t pid;
            if (gap_ms > 0) {
                struct timespec gap = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
                nanosleep(&gap, NULL);
            }
            long long t0 = now_ns();
            int rc = posix_spawn(&pid, cmds[c][0], NULL, NULL, cmds[c], environ);
            if (rc != 0) {
                fprintf(stderr, "posix_spawn %s: %s\n", cmds[c][0], strerror(rc));
                return 1;
            }
            int status;
            if (waitpid(pid, &status, 0) < 0) { perror("waitpid"); return 1; }
            long long t1 = now_ns();
            printf("%d %lld %d\n", c, t1 - t0, status);
        }
    }
    return 0;
}
