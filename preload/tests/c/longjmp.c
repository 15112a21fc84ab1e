/*
 * A test program for ism-run (preload/tests/run.rs,
 * `a_siglongjmp_out_of_a_waiting_read_leaves_the_socket_working`), in C because Rust
 * cannot call sigsetjmp.
 *
 *   longjmp ADDR [EARLY_US]
 *
 * Connects to the echo server at ADDR (host:port). Ten times, a handler leaves a read
 * that waits for data by siglongjmp: the signal comes EARLY_US after the read began
 * (default 8: within the library's spin before its kernel wait; 20000: in that wait).
 * Then 50 round trips whose request a second thread sends 2 ms after the read began, so
 * that the echo comes only after the read went to sleep: each must end (SO_RCVTIMEO of
 * 10 s bounds it) with the echo. Prints "ok longjmp" and exits 0, or says what failed
 * and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static sigjmp_buf jump;
static volatile sig_atomic_t armed;
static pthread_t reader;
static int sock;
static long early_us = 8;
/* 1: signal the reader EARLY_US from now; 2: send a request 2 ms from now; -1: end. */
static atomic_int job;

static void on_usr1(int sig) {
    (void)sig;
    if (armed) {
        armed = 0;
        siglongjmp(jump, 1);
    }
}

static void pause_us(long us) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < us);
}

static void *helper(void *arg) {
    (void)arg;
    for (;;) {
        int j;
        while ((j = atomic_load(&job)) == 0)
            ;
        if (j < 0)
            return NULL;
        if (j == 1) {
            if (early_us < 1000)
                pause_us(early_us);
            else
                usleep(early_us);
            atomic_store(&job, 0);
            pthread_kill(reader, SIGUSR1);
        } else {
            usleep(2000);
            atomic_store(&job, 0);
            if (write(sock, "ping-pong-16byte", 16) != 16) {
                perror("longjmp: helper write");
                exit(1);
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: longjmp HOST:PORT [EARLY_US]\n");
        return 2;
    }
    if (argc > 2)
        early_us = atol(argv[2]);
    char host[64];
    snprintf(host, sizeof host, "%s", argv[1]);
    char *colon = strrchr(host, ':');
    if (!colon)
        return 2;
    *colon = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    inet_pton(AF_INET, host, &a.sin_addr);
    sock = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sock, (struct sockaddr *)&a, sizeof a)) {
        perror("longjmp: connect");
        return 1;
    }
    struct timeval limit = {.tv_sec = 10};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    reader = pthread_self();
    pthread_t t;
    pthread_create(&t, NULL, helper, NULL);
    char buf[64];
    if (write(sock, "w", 1) != 1 || read(sock, buf, 1) != 1) {
        fprintf(stderr, "longjmp: the first echo failed\n");
        return 1;
    }
    int jumps = 0;
    for (int i = 0; i < 10; i++) {
        if (sigsetjmp(jump, 1)) {
            jumps++;
            while (atomic_load(&job) != 0)
                ;
            continue;
        }
        armed = 1;
        atomic_store(&job, 1);
        ssize_t r = read(sock, buf, sizeof buf);
        armed = 0;
        fprintf(stderr, "longjmp: round %d: the read returned %zd (errno %d)\n", i, r, errno);
        return 1;
    }
    for (int i = 0; i < 50; i++) {
        atomic_store(&job, 2);
        int got = 0;
        while (got < 16) {
            ssize_t r = read(sock, buf + got, 16 - got);
            if (r <= 0) {
                fprintf(stderr, "longjmp: round trip %d: read gave %zd (errno %d: %s)\n", i, r,
                        errno, r < 0 ? strerror(errno) : "end of stream");
                return 1;
            }
            got += r;
        }
        if (memcmp(buf, "ping-pong-16byte", 16)) {
            fprintf(stderr, "longjmp: round trip %d: wrong echo\n", i);
            return 1;
        }
        while (atomic_load(&job) != 0)
            ;
    }
    atomic_store(&job, -1);
    pthread_join(t, NULL);
    shutdown(sock, SHUT_WR);
    while (read(sock, buf, sizeof buf) > 0)
        ;
    close(sock);
    printf("ok longjmp (%d jumps, then 50 round trips)\n", jumps);
    return 0;
}
