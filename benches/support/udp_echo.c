/* A minimal C UDP echo loop: the floor a readiness-based server that
 * answers a datagram per call can reach. One thread, one non-blocking
 * socket, epoll, recvfrom until EAGAIN, sendto each datagram back.
 *
 * cc -O2 -o udp_echo benches/support/udp_echo.c && ./udp_echo 127.0.0.1 7010
 * prints `listening on udp://ADDR:PORT`. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IPV4 PORT\n", argv[0]);
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
    static char buf[65536];
    for (;;) {
        struct epoll_event got;
        if (epoll_wait(ep, &got, 1, -1) < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (;;) {
            struct sockaddr_storage peer;
            socklen_t plen = sizeof peer;
            ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                break; /* EAGAIN: wait for the next edge */
            }
            sendto(fd, buf, n, 0, (struct sockaddr *)&peer, plen);
        }
    }
}
