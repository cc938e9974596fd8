/* The kernel floor for "cancel a process tree": what the fastest possible supervisor would do.
 *
 *   cancel_floor CGROUP2_DIR N sleep|busy
 *
 * Creates CGROUP2_DIR/floor-<pid>, starts `sh -c SCRIPT` in it (the same tree scripts/bench asks
 * stockade to run: the shell plus N-1 children, sleeping or spinning), waits for its READY line,
 * then times: write 1 to cgroup.kill -> cgroup.events says populated 0 (woken by poll(POLLPRI),
 * as the kernel notifies) -> rmdir. Prints "<nanoseconds>". Then reaps every child (it is a child
 * subreaper, so the tree's orphans come back to it). Untimed setup, timed teardown only. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, const char *path) {
    fprintf(stderr, "cancel_floor: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static int populated(int fd, const char *path) {
    char buf[256];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n < 0) die("read", path);
    buf[n] = 0;
    char *p = strstr(buf, "populated ");
    if (!p) die("no populated key in", path);
    return p[10] == '1';
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CGROUP2_DIR N sleep|busy\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]);
    const char *body = strcmp(argv[3], "busy") == 0 ? "(while :; do :; done) &" : "sleep 1000 &";
    char script[512];
    snprintf(script, sizeof script,
             "i=1; while [ $i -lt %d ]; do %s i=$((i+1)); done; echo READY; wait", n, body);
    char dir[4096], procs[4200], kill_file[4200], events[4200];
    snprintf(dir, sizeof dir, "%s/floor-%d", argv[1], (int)getpid());
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    snprintf(kill_file, sizeof kill_file, "%s/cgroup.kill", dir);
    snprintf(events, sizeof events, "%s/cgroup.events", dir);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) die("prctl", "PR_SET_CHILD_SUBREAPER");
    if (mkdir(dir, 0755) != 0) die("mkdir", dir);
    int out[2];
    if (pipe(out) != 0) die("pipe", "");
    pid_t pid = fork();
    if (pid < 0) die("fork", "");
    if (pid == 0) {
        char me[32];
        int fd = open(procs, O_WRONLY);
        if (fd < 0) die("open", procs);
        snprintf(me, sizeof me, "%d", (int)getpid());
        if (write(fd, me, strlen(me)) < 0) die("write", procs);
        close(fd);
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    char line[64];
    if (!fgets(line, sizeof line, f) || strncmp(line, "READY", 5) != 0) die("no READY from", "sh");

    int ev = open(events, O_RDONLY);
    if (ev < 0) die("open", events);
    int kfd = open(kill_file, O_WRONLY);
    if (kfd < 0) die("open", kill_file);
    long long t0 = now_ns();
    if (write(kfd, "1", 1) != 1) die("write", kill_file);
    while (populated(ev, events)) {
        struct pollfd p = {ev, POLLPRI, 0};
        poll(&p, 1, 100);
    }
    while (rmdir(dir) != 0) {
        if (errno != EBUSY) die("rmdir", dir);
    }
    long long t1 = now_ns();
    printf("%lld\n", t1 - t0);
    close(kfd);
    close(ev);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
    return 0;
}
