/* A minimal C UDP echo loop that batches: the floor a readiness-based
 * server that moves many datagrams per call can reach. The same shape as
 * udp_echo.c (one thread, one non-blocking socket, epoll edge-triggered),
 * but one recvmmsg takes up to BATCH datagrams and one sendmmsg sends
 * them all back, each from its own slot to its own sender. No GSO, no
 * GRO: a call per batch, a datagram per message.
 *
 * cc -O2 -o udp_echo_mmsg benches/support/udp_echo_mmsg.c
 * ./udp_echo_mmsg 127.0.0.1 7010 [BATCH]   (BATCH 1 to 64, default 32)
 * prints `listening on udp://ADDR:PORT`. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BATCH 64
#define SLOT 65536

static char bufs[MAX_BATCH][SLOT];
static struct sockaddr_storage peers[MAX_BATCH];
static struct iovec iovs[MAX_BATCH];
static struct mmsghdr msgs[MAX_BATCH];

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s IPV4 PORT [BATCH]\n", argv[0]);
        return 2;
    }
    int batch = argc == 4 ? atoi(argv[3]) : 32;
    if (batch < 1 || batch > MAX_BATCH) {
        fprintf(stderr, "batch must be 1 to %d\n", MAX_BATCH);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("bind");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof ip);
    printf("listening on udp://%s:%d\n", ip, ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    for (;;) {
        struct epoll_event got;
        if (epoll_wait(ep, &got, 1, -1) < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (;;) {
            for (int i = 0; i < batch; i++) {
                iovs[i] = (struct iovec){.iov_base = bufs[i], .iov_len = SLOT};
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_name = &peers[i];
                msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
                msgs[i].msg_hdr.msg_iov = &iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int n = recvmmsg(fd, msgs, batch, 0, NULL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                break; /* EAGAIN: wait for the next edge */
            }
            /* The same headers send each datagram back to its sender. */
            for (int i = 0; i < n; i++)
                iovs[i].iov_len = msgs[i].msg_len;
            for (int sent = 0; sent < n;) {
                int s = sendmmsg(fd, msgs + sent, n - sent, 0);
                if (s < 0) {
                    if (errno == EINTR)
                        continue;
                    if (errno == EAGAIN)
                        break; /* a full send buffer: the rest is dropped */
                    s = 1;     /* this one refused: skip it */
                }
                sent += s;
            }
            if (n < batch)
                break; /* the queue was empty: wait for the next edge */
        }
    }
}
