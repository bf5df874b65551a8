/* rtpmeter: the far-end media of every call in `python -m bench`'s concurrency phase (built with cc at run time).
 *
 * Two UDP ports on 127.0.0.1: A (where the SIPp caller's SDP points) and B (the SIPp trunk's). SIPp only signals;
 * the engine's RTP for the A leg comes to port A and for the B leg to port B. Each new source address (one engine
 * RTP session) becomes a stream: the meter answers it from the same port (symmetric RTP) with its own G.711 stream,
 * 160 bytes every 20 ms on an absolute schedule, in the payload type the engine uses, so every bridged call carries
 * RTP both ways on both legs. A stream silent for 1 s is closed and stops being sent to.
 *
 * Measured per packet received from the engine (the receiver's view, what a phone would hear):
 *   expected  packets the stream's RTP timestamps span (ts advance / 160 + 1): a tick the engine skipped counts
 *   lost      expected - received (never negative), from sequence-free timestamp arithmetic
 *   late      arrival later than LATE_MS behind the stream's best transit time (arrival - ts/8000), i.e. what a
 *             LATE_MS jitter buffer could not play in time
 * and of the meter's own sends, how many went out more than 5 ms behind schedule (to show the meter kept up).
 *
 * Every second it prints one line to stdout:
 *   t=<s> a_streams=<n> b_streams=<n> rx=<n> expected=<n> lost=<n> late=<n> tx=<n> tx_late=<n>
 * (interval counts over both ports; streams: open now). SIGTERM: a last line and exit.
 *
 * Usage: rtpmeter PORT_A PORT_B [LATE_MS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_STREAMS 65536 /* indexed by the engine's source port: one socket per engine RTP session */
#define BATCH 256
#define TICK_NS 20000000LL
#define IDLE_NS 1000000000LL

typedef struct {
    int active;
    int sock;          /* the meter port it came to (A or B) */
    int side;          /* 0 = A, 1 = B */
    struct sockaddr_in peer;
    uint8_t pt;
    uint32_t ssrc, ts_first, ts_max;
    int64_t ext_first, ext_max; /* extended timestamps */
    int64_t received;
    int64_t counted_expected, counted_lost; /* what was already reported */
    double best_transit;
    int64_t last_rx_ns;
    int64_t next_tx_ns;
    uint16_t tx_seq;
    uint32_t tx_ts;
} Stream;

static Stream streams[MAX_STREAMS];
static int live[MAX_STREAMS]; /* ports of the open streams */
static int nlive = 0;
static volatile sig_atomic_t stop_flag = 0;
static int64_t iv_rx, iv_expected, iv_lost, iv_late, iv_tx, iv_tx_late;
static double late_s = 0.050;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void on_term(int sig) { (void)sig; stop_flag = 1; }

static int open_port(int port) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (s < 0) { perror("socket"); exit(2); }
    int size = 8 << 20;
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(2); }
    return s;
}

static void account(Stream *st) {
    int64_t expected = st->ext_max - st->ext_first;
    expected = expected / 160 + 1;
    int64_t lost = expected - st->received;
    if (lost < 0) lost = 0;
    iv_expected += expected - st->counted_expected;
    iv_lost += lost - st->counted_lost;
    st->counted_expected = expected;
    st->counted_lost = lost;
}

static void on_packet(int sock, int side, const uint8_t *p, int n, struct sockaddr_in *from, int64_t t) {
    if (n < 12 || (p[0] >> 6) != 2) return;
    uint8_t pt = p[1] & 0x7f;
    if (pt != 0 && pt != 8) return; /* telephone-event / CN: not audio frames */
    uint32_t ts = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
    int port = ntohs(from->sin_port);
    Stream *st = &streams[port];
    if (!st->active) {
        memset(st, 0, sizeof *st);
        st->active = 1;
        st->sock = sock;
        st->side = side;
        st->peer = *from;
        st->pt = pt;
        st->ssrc = (uint32_t)rand() ^ (uint32_t)port;
        st->tx_seq = (uint16_t)rand();
        st->tx_ts = (uint32_t)rand();
        st->ts_max = ts;
        st->ext_first = st->ext_max = ts;
        st->best_transit = 1e18;
        st->next_tx_ns = t;
        live[nlive++] = port;
    }
    st->last_rx_ns = t;
    st->received++;
    iv_rx++;
    int32_t d = (int32_t)(ts - st->ts_max);
    int64_t ext = st->ext_max + d;
    if (ext > st->ext_max) { st->ext_max = ext; st->ts_max = ts; }
    double transit = (double)t / 1e9 - (double)ext / 8000.0;
    if (transit < st->best_transit) st->best_transit = transit;
    else if (transit - st->best_transit > late_s) iv_late++;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: rtpmeter PORT_A PORT_B [LATE_MS]\n"); return 2; }
    if (argc > 3) late_s = atof(argv[3]) / 1000.0;
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    srand((unsigned)now_ns());
    int socks[2] = {open_port(atoi(argv[1])), open_port(atoi(argv[2]))};
    int ep = epoll_create1(0);
    for (int i = 0; i < 2; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, socks[i], &ev);
    }
    static uint8_t rbuf[BATCH][2048];
    static struct mmsghdr rmsg[BATCH];
    static struct iovec riov[BATCH];
    static struct sockaddr_in raddr[BATCH];
    static uint8_t tbuf[2][BATCH][172];
    static struct mmsghdr tmsg[2][BATCH];
    static struct iovec tiov[2][BATCH];
    int tcount[2] = {0, 0};
    printf("ready\n");
    fflush(stdout);
    int64_t start = now_ns(), next_report = start + 1000000000LL;
    while (!stop_flag) {
        struct epoll_event evs[2];
        int nev = epoll_wait(ep, evs, 2, 1);
        int64_t t = now_ns();
        for (int e = 0; e < nev; e++) {
            int side = (int)evs[e].data.u32;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    riov[i].iov_base = rbuf[i];
                    riov[i].iov_len = sizeof rbuf[i];
                    memset(&rmsg[i].msg_hdr, 0, sizeof rmsg[i].msg_hdr);
                    rmsg[i].msg_hdr.msg_iov = &riov[i];
                    rmsg[i].msg_hdr.msg_iovlen = 1;
                    rmsg[i].msg_hdr.msg_name = &raddr[i];
                    rmsg[i].msg_hdr.msg_namelen = sizeof raddr[i];
                }
                int n = recvmmsg(socks[side], rmsg, BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0) break;
                for (int i = 0; i < n; i++) on_packet(socks[side], side, rbuf[i], (int)rmsg[i].msg_len, &raddr[i], t);
                if (n < BATCH) break;
            }
        }
        /* sends due, and streams gone quiet */
        for (int i = 0; i < nlive; i++) {
            Stream *st = &streams[live[i]];
            if (t - st->last_rx_ns > IDLE_NS) {
                account(st);
                st->active = 0;
                live[i--] = live[--nlive];
                continue;
            }
            while (st->next_tx_ns <= t) {
                if (t - st->next_tx_ns > 5000000LL) iv_tx_late++;
                if (t - st->next_tx_ns > 100000000LL) { /* far behind: skip, do not burst */
                    int64_t skip = (t - st->next_tx_ns) / TICK_NS;
                    st->next_tx_ns += skip * TICK_NS;
                    st->tx_ts += (uint32_t)(skip * 160);
                }
                int s = st->side, k = tcount[s];
                uint8_t *b = tbuf[s][k];
                b[0] = 0x80; b[1] = st->pt;
                b[2] = (uint8_t)(st->tx_seq >> 8); b[3] = (uint8_t)st->tx_seq;
                b[4] = (uint8_t)(st->tx_ts >> 24); b[5] = (uint8_t)(st->tx_ts >> 16);
                b[6] = (uint8_t)(st->tx_ts >> 8); b[7] = (uint8_t)st->tx_ts;
                b[8] = (uint8_t)(st->ssrc >> 24); b[9] = (uint8_t)(st->ssrc >> 16);
                b[10] = (uint8_t)(st->ssrc >> 8); b[11] = (uint8_t)st->ssrc;
                memset(b + 12, st->pt == 8 ? 0xd5 : 0xff, 160);
                tiov[s][k].iov_base = b;
                tiov[s][k].iov_len = 172;
                memset(&tmsg[s][k].msg_hdr, 0, sizeof tmsg[s][k].msg_hdr);
                tmsg[s][k].msg_hdr.msg_iov = &tiov[s][k];
                tmsg[s][k].msg_hdr.msg_iovlen = 1;
                tmsg[s][k].msg_hdr.msg_name = &st->peer;
                tmsg[s][k].msg_hdr.msg_namelen = sizeof st->peer;
                tcount[s]++;
                st->tx_seq++;
                st->tx_ts += 160;
                st->next_tx_ns += TICK_NS;
                iv_tx++;
                if (tcount[s] == BATCH) { sendmmsg(socks[s], tmsg[s], BATCH, 0); tcount[s] = 0; }
            }
        }
        for (int s = 0; s < 2; s++)
            if (tcount[s]) { sendmmsg(socks[s], tmsg[s], (unsigned)tcount[s], 0); tcount[s] = 0; }
        if (t >= next_report || stop_flag) {
            int na = 0, nb = 0;
            for (int i = 0; i < nlive; i++) {
                account(&streams[live[i]]);
                if (streams[live[i]].side) nb++; else na++;
            }
            printf("t=%.3f a_streams=%d b_streams=%d rx=%lld expected=%lld lost=%lld late=%lld tx=%lld tx_late=%lld\n",
                   (double)(t - start) / 1e9, na, nb, (long long)iv_rx, (long long)iv_expected, (long long)iv_lost,
                   (long long)iv_late, (long long)iv_tx, (long long)iv_tx_late);
            fflush(stdout);
            iv_rx = iv_expected = iv_lost = iv_late = iv_tx = iv_tx_late = 0;
            next_report += 1000000000LL;
        }
    }
    return 0;
}
