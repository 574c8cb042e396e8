// smprobe: minimal sockmap L4-proxy data-integrity probe.
//
// One process plays three roles on 127.0.0.1:
//   client  --TCP-->  proxy [pa | pu]  --TCP-->  server
// Each run: the client and the server each push N bytes to the other
// (position-encoded pattern, optional SHA-256) and verify every byte received.
// The proxy forwards either in userspace (copy / splice) or with sockmap:
//   egress  : sk_skb stream_verdict, bpf_sk_redirect_hash(skb, sock_hash, peer, 0)
//   ingress : same verdict with BPF_F_INGRESS straight into the *endpoint* socket
//             (only possible because the endpoints are local; not a proxy design)
//   msg     : sk_msg verdict on the *sending endpoint* socket,
//             bpf_msg_redirect_hash(msg, msg_hash, proxy_peer, 0) (egress)
// -P LIMIT attaches a stream parser that cuts messages to LIMIT bytes (0 = whole skb).
// -t loads fentry/fexit tracing of sk_psock_backlog/skb_send_sock and checks
//    whether a retried skb is resent from the saved offset.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

enum mode { M_COPY, M_SPLICE, M_EGRESS, M_INGRESS, M_MSG };
static const char *mode_names[] = {"copy", "splice", "egress", "ingress", "msg"};

static enum mode g_mode = M_EGRESS;
static uint64_t g_n = 1ull << 30;
static int g_runs = 10;
static int g_parse = -1; /* -1 = no stream parser */
static int g_sndbuf = 0, g_rcvbuf = 0, g_ep_sndbuf = 0;
static int g_sha = 0, g_trace = 0, g_verbose = 0;
static int g_idle_timeout = 10;
static int g_time_limit = 100;
static int g_noread = 0; /* -N: sockmap modes: proxy never calls read() on its sockets */
static int g_raw = 0; /* -X: throughput only, no pattern generation / verification */
static const char *g_objdir = ".";

#define K1 0x9E3779B97F4A7C15ull
static uint64_t k1inv;
static const uint64_t SEED_C2S = 0x1111111111111111ull, SEED_S2C = 0x2222222222222222ull;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
	perror(m);
	exit(2);
}

/* pattern: 8-byte word i (stream bytes 8i..8i+7, little endian) = i*K1 ^ seed */
static void gen(uint8_t *dst, uint64_t pos, size_t len, uint64_t seed)
{
	uint64_t a = pos & ~7ull;
	size_t skip = pos - a;
	while (len) {
		uint64_t w = (a >> 3) * K1 ^ seed;
		uint8_t wb[8];
		memcpy(wb, &w, 8);
		size_t take = 8 - skip;
		if (take > len)
			take = len;
		memcpy(dst, wb + skip, take);
		dst += take;
		len -= take;
		a += 8;
		skip = 0;
	}
}

/* fast aligned generator (pos multiple of 8, len multiple of 8) */
static void gen_aligned(uint8_t *dst, uint64_t pos, size_t len, uint64_t seed)
{
	uint64_t *d = (uint64_t *)dst, i = pos >> 3;
	for (size_t k = 0; k < len / 8; k++)
		d[k] = (i + k) * K1 ^ seed;
}

static int64_t decode_n(const uint8_t *b, uint64_t seed, int n);
/* Find the stream offset whose pattern matches b[0..64); returns -1 if none. */
static int64_t decode(const uint8_t *b, uint64_t seed)
{
	return decode_n(b, seed, 64);
}

static int64_t decode_n(const uint8_t *b, uint64_t seed, int n)
{
	for (int r = 0; r < 8; r++) {
		int k0 = (8 - r) & 7;
		uint64_t w;
		memcpy(&w, b + k0, 8);
		uint64_t idx = (w ^ seed) * k1inv;
		if (idx > (1ull << 50))
			continue;
		int64_t src = (int64_t)(idx * 8) - k0;
		if (src < 0)
			continue;
		uint8_t tmp[64];
		gen(tmp, src, n, seed);
		if (!memcmp(tmp, b, n))
			return src;
	}
	return -1;
}

struct dir_result {
	const char *name;
	uint64_t seed;
	int fd;
	uint64_t got;
	int corrupt, stall;
	uint64_t bad_off;      /* first mismatching stream offset */
	int64_t src_off;       /* stream offset the data at bad_off came from */
	const char *src_dir;   /* which direction's pattern it matched */
	uint64_t replay_len;   /* how long it kept matching from src_off */
	int64_t after_replay;  /* offset the stream continued from after the replay */
	double t_done;
	unsigned char sha[32];
	int kick_fd;          /* the sending endpoint of this direction */
	int kicked, recovered;
	uint64_t got_at_stall;
};

struct writer_arg {
	int fd;
	uint64_t seed;
	unsigned char sha[32];
	uint64_t sent;
	int err;
};

static void *writer(void *p)
{
	struct writer_arg *w = p;
	const size_t CH = 1 << 20;
	uint8_t *buf = aligned_alloc(64, CH);
	SHA256_CTX ctx;
	if (g_sha)
		SHA256_Init(&ctx);
	uint64_t pos = 0;
	while (pos < g_n) {
		size_t len = g_n - pos < CH ? g_n - pos : CH;
		if (!g_raw || pos == 0)
			gen_aligned(buf, pos, (len + 7) & ~7ull, w->seed);
		if (g_sha)
			SHA256_Update(&ctx, buf, len);
		size_t o = 0;
		while (o < len) {
			ssize_t r = send(w->fd, buf + o, len - o, MSG_NOSIGNAL);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				w->err = errno;
				goto out;
			}
			o += r;
		}
		pos += len;
	}
out:
	w->sent = pos;
	if (g_sha)
		SHA256_Final(w->sha, &ctx);
	free(buf);
	return NULL;
}

static const double *g_t0;

static ssize_t read_timeout(int fd, uint8_t *b, size_t len)
{
	for (;;) {
		ssize_t r = recv(fd, b, len, MSG_DONTWAIT);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -1;
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		int pr = poll(&pf, 1, g_idle_timeout * 1000);
		if (pr == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
}

static void *reader(void *p)
{
	struct dir_result *d = p;
	const size_t CH = 1 << 20, TAIL = 4 << 20;
	uint8_t *buf = aligned_alloc(64, CH + TAIL), *exp = aligned_alloc(64, CH + 64);
	SHA256_CTX ctx;
	if (g_sha)
		SHA256_Init(&ctx);
	uint64_t pos = 0;
	while (pos < g_n) {
		size_t want = g_n - pos < CH ? g_n - pos : CH;
		ssize_t r = read_timeout(d->fd, buf, want);
		if (r <= 0 && errno == ETIMEDOUT && !d->kicked) {
			/* Stalled. Is the tail stuck (waiting for more input) or lost?
			 * Push 256 KiB more on the sender and see whether the missing bytes show up. */
			d->kicked = 1;
			d->got_at_stall = pos;
			static uint8_t extra[256 << 10];
			gen(extra, g_n, sizeof(extra), d->seed);
			send(d->kick_fd, extra, sizeof(extra), MSG_NOSIGNAL | MSG_DONTWAIT);
			r = read_timeout(d->fd, buf, want);
			if (r > 0)
				d->recovered = 1;
		}
		if (r <= 0) {
			d->stall = 1;
			break;
		}
		if (d->kicked)
			d->stall = 1;
		if (g_sha)
			SHA256_Update(&ctx, buf, r);
		if (!d->corrupt && !g_raw) {
			uint64_t a = pos & ~7ull;
			gen_aligned(exp, a, ((pos + r - a) + 7) & ~7ull, d->seed);
			if (memcmp(exp + (pos - a), buf, r)) {
				size_t i = 0;
				while (exp[pos - a + i] == buf[i])
					i++;
				d->corrupt = 1;
				d->bad_off = pos + i;
				/* gather more data after the mismatch to characterise it */
				size_t have = r;
				while (have - i < TAIL - 64 && pos + have < g_n) {
					size_t lim = CH + TAIL - have;
					if (lim > g_n - pos - have)
						lim = g_n - pos - have;
					ssize_t r2 = read_timeout(d->fd, buf + have, lim);
					if (r2 <= 0)
						break;
					if (g_sha)
						SHA256_Update(&ctx, buf + have, r2);
					have += r2;
				}
				r = have;
				if (have - i >= 64) {
					int64_t s = decode(buf + i, d->seed);
					d->src_dir = "same";
					if (s < 0) {
						s = decode(buf + i, d->seed == SEED_C2S ? SEED_S2C : SEED_C2S);
						d->src_dir = "OTHER";
					}
					d->src_off = s;
					if (s >= 0) {
						uint8_t e;
						uint64_t k = 0;
						while (i + k < have) {
							gen(&e, s + k, 1, !strcmp(d->src_dir, "same") ? d->seed : (d->seed == SEED_C2S ? SEED_S2C : SEED_C2S));
							if (e != buf[i + k])
								break;
							k++;
						}
						d->replay_len = k;
						d->after_replay = -1;
						if (i + k + 64 <= have)
							d->after_replay = decode(buf + i + k, d->seed);
					}
				}
			}
		}
		pos += r;
	}
	d->got = pos;
	d->t_done = now() - *g_t0;
	if (g_sha)
		SHA256_Final(d->sha, &ctx);
	free(buf);
	free(exp);
	return NULL;
}

/* ---------------- proxy side ---------------- */

struct bpf_state {
	struct bpf_object *obj;
	int sock_hash, msg_hash, peer, peer_ports, config, stats, stream_off;
	struct ring_buffer *rb;
} B;

struct sm_cfg {
	uint64_t redir_flags;
	uint32_t parse_limit, log_skbs;
};
struct sm_stats {
	uint64_t verdict_calls, verdict_bytes, redir_ok, redir_fail;
	uint64_t msg_calls, msg_bytes, msg_ok, msg_pass;
	uint64_t parse_calls;
};

static uint64_t cookie(int fd)
{
	uint64_t c;
	socklen_t l = sizeof(c);
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &l))
		die("SO_COOKIE");
	return c;
}

static int prog_fd(struct bpf_object *o, const char *name)
{
	struct bpf_program *p = bpf_object__find_program_by_name(o, name);
	if (!p) {
		fprintf(stderr, "no prog %s\n", name);
		exit(2);
	}
	return bpf_program__fd(p);
}

/* ---- skb boundary log (verdict program -> skblog ring buffer) ---- */
struct skb_ev {
	uint64_t cookie, off;
	uint32_t len, pad;
	uint8_t head[32];
};
#define MAXEV (4 << 20)
static struct skb_ev *evs;
static atomic_size_t nev;

static int on_ev(void *ctx, void *data, size_t sz)
{
	size_t i = atomic_fetch_add(&nev, 1);
	if (i < MAXEV)
		memcpy(&evs[i], data, sizeof(struct skb_ev));
	return 0;
}

static atomic_int tr_stop;
static void *trace_thread(void *p)
{
	while (!atomic_load(&tr_stop))
		ring_buffer__poll(B.rb, 100);
	ring_buffer__consume(B.rb);
	return NULL;
}

/* Locate the skb (as seen by the verdict program on the ingress socket) that
 * contains stream offset src, and describe the corruption relative to it. */
static void explain(uint64_t ck, uint64_t bad_off, int64_t src, uint64_t seed)
{
	size_t n = atomic_load(&nev), cnt = 0, maxlen = 0;
	uint64_t tot = 0;
	if (n > MAXEV)
		n = MAXEV;
	for (size_t i = 0; i < n; i++) {
		struct skb_ev *e = &evs[i];
		if (e->cookie != ck)
			continue;
		cnt++;
		tot += e->len;
		if (e->len > maxlen)
			maxlen = e->len;
		if (src >= 0 && (uint64_t)src >= e->off && (uint64_t)src < e->off + e->len) {
			/* show the skbs around it: cumulative offset vs. the offset their content really has */
			size_t k = i, shown = 0;
			while (k > 0 && shown < 3) {
				k--;
				if (evs[k].cookie == ck)
					shown++;
			}
			for (shown = 0; k < n && shown < 8; k++) {
				struct skb_ev *x = &evs[k];
				if (x->cookie != ck)
					continue;
				shown++;
				int64_t content = x->len >= 32 ? decode_n(x->head, seed, 32) : -2;
				printf("        verdict skb #%zu: cumulative stream off %llu len %u, content starts at stream off %lld%s\n", k,
				       (unsigned long long)x->off, x->len, (long long)content,
				       content >= 0 && (uint64_t)content != x->off ? "   <== DUPLICATE/OUT-OF-PLACE CONTENT" : "");
			}
		}
		if (src >= 0 && (uint64_t)src >= e->off && (uint64_t)src < e->off + e->len)
			printf("      verdict skb containing the replay source: cumulative stream [%llu, %llu) len %u; source is %s its start "
			       "(+%lld); first bad output byte is %llu bytes after its start\n",
			       (unsigned long long)e->off, (unsigned long long)(e->off + e->len), e->len,
			       (uint64_t)src == e->off ? "EXACTLY AT" : "inside", (long long)(src - e->off),
			       (unsigned long long)(bad_off - e->off));
	}
	printf("      ingress skbs seen by verdict for this direction: %zu, total %llu B (N=%llu), mean %.0f B, max %zu B\n", cnt,
	       (unsigned long long)tot, (unsigned long long)g_n, cnt ? (double)tot / cnt : 0, maxlen);
}

static void load_bpf(void)
{
	char path[512];
	if (!g_verbose)
		libbpf_set_print(NULL);
	snprintf(path, sizeof(path), "%s/sockmap.bpf.o", g_objdir);
	B.obj = bpf_object__open_file(path, NULL);
	if (!B.obj || bpf_object__load(B.obj)) {
		fprintf(stderr, "load %s failed\n", path);
		exit(2);
	}
	B.sock_hash = bpf_object__find_map_fd_by_name(B.obj, "sock_hash");
	B.msg_hash = bpf_object__find_map_fd_by_name(B.obj, "msg_hash");
	B.peer = bpf_object__find_map_fd_by_name(B.obj, "peer");
	B.peer_ports = bpf_object__find_map_fd_by_name(B.obj, "peer_ports");
	B.config = bpf_object__find_map_fd_by_name(B.obj, "sm_config");
	B.stats = bpf_object__find_map_fd_by_name(B.obj, "sm_stats");
	struct sm_cfg c = {.redir_flags = g_mode == M_INGRESS ? BPF_F_INGRESS : 0,
			   .parse_limit = g_parse > 0 ? g_parse : 0, .log_skbs = g_trace};
	B.stream_off = bpf_object__find_map_fd_by_name(B.obj, "stream_off");
	uint32_t k = 0;
	if (bpf_map_update_elem(B.config, &k, &c, 0))
		die("config");
	if (g_mode == M_MSG) {
		if (bpf_prog_attach(prog_fd(B.obj, "sm_msg"), B.msg_hash, BPF_SK_MSG_VERDICT, 0))
			die("attach msg");
	} else {
		if (g_parse >= 0 && bpf_prog_attach(prog_fd(B.obj, "sm_parser"), B.sock_hash, BPF_SK_SKB_STREAM_PARSER, 0))
			die("attach parser");
		if (bpf_prog_attach(prog_fd(B.obj, "sm_verdict"), B.sock_hash, BPF_SK_SKB_STREAM_VERDICT, 0))
			die("attach verdict");
	}
	if (g_trace) {
		B.rb = ring_buffer__new(bpf_object__find_map_fd_by_name(B.obj, "skblog"), on_ev, NULL, NULL);
		evs = calloc(MAXEV, sizeof(*evs));
	}
}

static void read_stats(struct sm_stats *out)
{
	int ncpu = libbpf_num_possible_cpus();
	struct sm_stats v[ncpu];
	uint32_t k = 0;
	memset(out, 0, sizeof(*out));
	if (bpf_map_lookup_elem(B.stats, &k, v))
		return;
	for (int i = 0; i < ncpu; i++) {
		uint64_t *d = (uint64_t *)out, *s = (uint64_t *)&v[i];
		for (size_t j = 0; j < sizeof(*out) / 8; j++)
			d[j] += s[j];
	}
}

static void map_put(int map, int fd)
{
	uint64_t k = cookie(fd);
	uint64_t v = fd;
	if (bpf_map_update_elem(map, &k, &v, BPF_NOEXIST))
		die("sockhash insert");
}

static void peer_put(int from, int to)
{
	uint64_t k = cookie(from), v = cookie(to);
	if (bpf_map_update_elem(B.peer, &k, &v, 0))
		die("peer insert");
}

static uint32_t portkey(int fd)
{
	struct sockaddr_in l, r;
	socklen_t n = sizeof(l);
	getsockname(fd, (void *)&l, &n);
	n = sizeof(r);
	getpeername(fd, (void *)&r, &n);
	return ((uint32_t)ntohs(l.sin_port) << 16) | ntohs(r.sin_port);
}

static void peer_ports_put(int from, int to)
{
	uint32_t k = portkey(from);
	uint64_t v = cookie(to);
	if (bpf_map_update_elem(B.peer_ports, &k, &v, 0))
		die("peer_ports insert");
}

static void peer_ports_del(int fd)
{
	uint32_t k = portkey(fd);
	bpf_map_delete_elem(B.peer_ports, &k);
}

static void peer_del(int fd)
{
	uint64_t k = cookie(fd);
	bpf_map_delete_elem(B.peer, &k);
}

struct fwd_arg {
	int in, out;
	uint64_t bytes;
	int last_errno, reads;
};

static void *copy_fwd(void *p)
{
	struct fwd_arg *a = p;
	static __thread uint8_t buf[256 << 10];
	for (;;) {
		ssize_t r = read(a->in, buf, sizeof(buf));
		if (r <= 0)
			break;
		a->bytes += r;
		for (ssize_t o = 0; o < r;) {
			ssize_t w = send(a->out, buf + o, r - o, MSG_NOSIGNAL);
			if (w <= 0)
				goto out;
			o += w;
		}
	}
out:
	shutdown(a->out, SHUT_WR);
	return NULL;
}

static void *splice_fwd(void *p)
{
	struct fwd_arg *a = p;
	int pp[2];
	if (pipe(pp))
		die("pipe");
	fcntl(pp[1], F_SETPIPE_SZ, 1 << 20);
	for (;;) {
		ssize_t r = splice(a->in, NULL, pp[1], NULL, 1 << 20, SPLICE_F_MOVE);
		if (r <= 0)
			break;
		a->bytes += r;
		while (r > 0) {
			ssize_t w = splice(pp[0], NULL, a->out, NULL, r, SPLICE_F_MOVE);
			if (w <= 0)
				goto out;
			r -= w;
		}
	}
out:
	shutdown(a->out, SHUT_WR);
	close(pp[0]);
	close(pp[1]);
	return NULL;
}

/* sockmap modes: the proxy only watches for EOF and counts payload that leaked to it */
static void *idle_fwd(void *p)
{
	struct fwd_arg *a = p;
	uint8_t buf[65536];
	for (;;) {
		ssize_t r = read(a->in, buf, sizeof(buf));
		a->reads++;
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			/* tcp_bpf_recvmsg_parser can return EAGAIN on a blocking socket */
			a->last_errno = errno;
			continue;
		}
		if (r <= 0)
			break;
		a->bytes += r;
	}
	return NULL;
}

static int listener(struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa->sin_port = 0;
	if (bind(fd, (void *)sa, sizeof(*sa)) || listen(fd, 16))
		die("listen");
	socklen_t l = sizeof(*sa);
	getsockname(fd, (void *)sa, &l);
	return fd;
}

static void setbuf_(int fd, int opt, int v)
{
	if (v && setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v)))
		die("setsockopt buf");
}

/* TCP MIB counters of the current network namespace (run the probe in its own netns) */
#define NCTR 24
static const char *ctr_names[NCTR] = {"RetransSegs", "TCPLossProbes", "TCPTimeouts", "TCPFastRetrans", "TCPSlowStartRetrans",
	"TCPDSACKOldSent", "TCPDSACKOfoSent", "TCPDSACKRecv", "TCPRcvQDrop", "TCPOFOQueue", "TCPOFODrop", "PruneCalled",
	"RcvPruned", "TCPRcvCollapsed", "TCPBacklogDrop", "TCPZeroWindowDrop", "TCPWantZeroWindowAdv", "TCPSpuriousRTOs",
	"TCPPartialUndo", "TCPSACKRecv", "TCPRetransFail", "TCPSpuriousRtxHostQueues", "TCPMemoryPressures", "TCPRcvCoalesce"};
static void read_ctrs(long long *v)
{
	const char *files[2] = {"/proc/net/netstat", "/proc/net/snmp"};
	memset(v, 0, sizeof(long long) * NCTR);
	for (int f = 0; f < 2; f++) {
		FILE *fp = fopen(files[f], "r");
		if (!fp)
			continue;
		static char hdr[8192], val[8192];
		while (fgets(hdr, sizeof(hdr), fp) && fgets(val, sizeof(val), fp)) {
			char *sh, *sv, *th = strtok_r(hdr, " \n", &sh), *tv = strtok_r(val, " \n", &sv);
			(void)th;
			(void)tv;
			for (;;) {
				th = strtok_r(NULL, " \n", &sh);
				tv = strtok_r(NULL, " \n", &sv);
				if (!th || !tv)
					break;
				for (int i = 0; i < NCTR; i++)
					if (!strcmp(th, ctr_names[i]))
						v[i] = atoll(tv);
			}
		}
		fclose(fp);
	}
}

static void usage(void)
{
	fprintf(stderr, "smprobe -m copy|splice|egress|ingress|msg [-n bytes] [-r runs] [-P parse_limit] [-b proxy_sndbuf]\n"
			"        [-R endpoint_rcvbuf] [-e endpoint_sndbuf] [-s(sha256)] [-t(trace)] [-L time_limit_s] [-o objdir] [-v]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int o;
	while ((o = getopt(argc, argv, "m:n:r:P:b:R:e:stL:o:vT:NX")) != -1) {
		switch (o) {
		case 'm':
			for (g_mode = 0; g_mode <= M_MSG && strcmp(optarg, mode_names[g_mode]); g_mode++)
				;
			if (g_mode > M_MSG)
				usage();
			break;
		case 'n': g_n = strtoull(optarg, NULL, 0); break;
		case 'r': g_runs = atoi(optarg); break;
		case 'P': g_parse = atoi(optarg); break;
		case 'b': g_sndbuf = atoi(optarg); break;
		case 'R': g_rcvbuf = atoi(optarg); break;
		case 'e': g_ep_sndbuf = atoi(optarg); break;
		case 's': g_sha = 1; break;
		case 't': g_trace = 1; break;
		case 'L': g_time_limit = atoi(optarg); break;
		case 'o': g_objdir = optarg; break;
		case 'v': g_verbose = 1; break;
		case 'T': g_idle_timeout = atoi(optarg); break;
		case 'N': g_noread = 1; break;
		case 'X': g_raw = 1; break;
		default: usage();
		}
	}
	signal(SIGPIPE, SIG_IGN);
	k1inv = K1;
	for (int i = 0; i < 6; i++)
		k1inv *= 2 - K1 * k1inv;

	int sockmap = g_mode >= M_EGRESS;
	if (g_mode == M_MSG)
		g_trace = 0;
	if (sockmap)
		load_bpf();
	pthread_t trt;
	if (g_trace)
		pthread_create(&trt, NULL, trace_thread, NULL);

	struct sockaddr_in psa, ssa;
	int pl = listener(&psa), sl = listener(&ssa);
	double start = now();
	int corrupt_runs = 0, stall_runs = 0, done = 0;
	double rate_sum = 0;

	printf("# mode=%s n=%llu parse=%d proxy_sndbuf=%d ep_rcvbuf=%d ep_sndbuf=%d sha=%d trace=%d\n", mode_names[g_mode],
	       (unsigned long long)g_n, g_parse, g_sndbuf, g_rcvbuf, g_ep_sndbuf, g_sha, g_trace);
	fflush(stdout);
	for (int run = 0; run < g_runs; run++) {
		if (now() - start > g_time_limit) {
			printf("# time limit reached after %d runs\n", run);
			break;
		}
		int c = socket(AF_INET, SOCK_STREAM, 0);
		setbuf_(c, SO_RCVBUF, g_rcvbuf);
		setbuf_(c, SO_SNDBUF, g_ep_sndbuf);
		if (connect(c, (void *)&psa, sizeof(psa)))
			die("connect proxy");
		int pa = accept(pl, NULL, NULL);
		int pu = socket(AF_INET, SOCK_STREAM, 0);
		setbuf_(pa, SO_SNDBUF, g_sndbuf);
		setbuf_(pu, SO_SNDBUF, g_sndbuf);
		if (connect(pu, (void *)&ssa, sizeof(ssa)))
			die("connect server");
		int sa = accept(sl, NULL, NULL);
		setbuf_(sa, SO_RCVBUF, g_rcvbuf);
		setbuf_(sa, SO_SNDBUF, g_ep_sndbuf);

		if (g_mode == M_EGRESS) {
			map_put(B.sock_hash, pa);
			map_put(B.sock_hash, pu);
			peer_put(pa, pu);
			peer_put(pu, pa);
		} else if (g_mode == M_INGRESS) {
			/* data arriving on pa goes straight into sa's receive queue and vice versa */
			map_put(B.sock_hash, c);
			map_put(B.sock_hash, sa);
			map_put(B.sock_hash, pa);
			map_put(B.sock_hash, pu);
			peer_put(pa, sa);
			peer_put(pu, c);
		} else if (g_mode == M_MSG) {
			map_put(B.msg_hash, c);
			map_put(B.msg_hash, sa);
			map_put(B.msg_hash, pa);
			map_put(B.msg_hash, pu);
			peer_ports_put(c, pu);
			peer_ports_put(sa, pa);
		}
		if (g_trace) {
			uint64_t z = 0, k1 = cookie(pa), k2 = cookie(pu);
			bpf_map_update_elem(B.stream_off, &k1, &z, 0);
			bpf_map_update_elem(B.stream_off, &k2, &z, 0);
		}
		/* go signal: endpoints send only after the proxy is set up */
		if (send(pa, "G", 1, 0) != 1 || send(pu, "G", 1, 0) != 1)
			die("go");
		char g;
		if (recv(c, &g, 1, MSG_WAITALL) != 1 || recv(sa, &g, 1, MSG_WAITALL) != 1)
			die("go recv");

		struct fwd_arg f1 = {.in = pa, .out = pu}, f2 = {.in = pu, .out = pa};
		pthread_t pt1, pt2;
		void *(*fn)(void *) = g_mode == M_COPY ? copy_fwd : g_mode == M_SPLICE ? splice_fwd : idle_fwd;
		int fwd_threads = !(sockmap && g_noread);
		if (fwd_threads) {
			pthread_create(&pt1, NULL, fn, &f1);
			pthread_create(&pt2, NULL, fn, &f2);
		}

		atomic_store(&nev, 0);
		uint64_t ck_pa = cookie(pa), ck_pu = cookie(pu);
		struct sm_stats s0 = {0}, s1 = {0};
		if (sockmap)
			read_stats(&s0);
		long long c0[NCTR], c1[NCTR];
		read_ctrs(c0);
		double t0 = now();
		g_t0 = &t0;
		struct writer_arg wc = {.fd = c, .seed = SEED_C2S}, ws = {.fd = sa, .seed = SEED_S2C};
		struct dir_result rc = {.name = "s2c", .seed = SEED_S2C, .fd = c, .kick_fd = sa},
				  rs = {.name = "c2s", .seed = SEED_C2S, .fd = sa, .kick_fd = c};
		pthread_t t[4];
		pthread_create(&t[0], NULL, writer, &wc);
		pthread_create(&t[1], NULL, writer, &ws);
		pthread_create(&t[2], NULL, reader, &rc);
		pthread_create(&t[3], NULL, reader, &rs);
		pthread_join(t[2], NULL);
		pthread_join(t[3], NULL);
		if (rc.corrupt || rs.corrupt || rc.stall || rs.stall) {
			shutdown(c, SHUT_RDWR);
			shutdown(sa, SHUT_RDWR);
		}
		pthread_join(t[0], NULL);
		pthread_join(t[1], NULL);
		if (sockmap)
			read_stats(&s1);
		if (g_mode == M_MSG) {
			peer_ports_del(c);
			peer_ports_del(sa);
		}
		close(c);
		close(sa);
		if (fwd_threads) {
			pthread_join(pt1, NULL);
			pthread_join(pt2, NULL);
		}
		if (g_trace) {
			uint64_t k1 = cookie(pa), k2 = cookie(pu);
			bpf_map_delete_elem(B.stream_off, &k1);
			bpf_map_delete_elem(B.stream_off, &k2);
		}
		if (sockmap) {
			peer_del(pa);
			peer_del(pu);
		}
		close(pa);
		close(pu);

		int bad = 0;
		struct dir_result *ds[2] = {&rs, &rc};
		struct writer_arg *ws_[2] = {&wc, &ws};
		for (int i = 0; i < 2; i++) {
			struct dir_result *d = ds[i];
			if (g_sha && !d->stall && memcmp(d->sha, ws_[i]->sha, 32))
				d->corrupt |= 2; /* sha mismatch */
			if (d->corrupt || d->stall)
				bad = 1;
		}
		corrupt_runs += (rs.corrupt || rc.corrupt);
		stall_runs += (!rs.corrupt && !rc.corrupt) && (rs.stall || rc.stall);
		double gibs = (g_n / (double)(1ull << 30)) / ((rs.t_done > rc.t_done ? rs.t_done : rc.t_done));
		rate_sum += gibs;
		done++;
		printf("run %3d: %s  %.2f GiB/s/dir (c2s %.2fs s2c %.2fs)", run, bad ? "BAD " : "ok  ", gibs, rs.t_done, rc.t_done);
		if (sockmap)
			printf("  verdict %llu redir_ok %llu fail %llu msg %llu/%llu leaked_to_proxy %llu",
			       (unsigned long long)(s1.verdict_calls - s0.verdict_calls),
			       (unsigned long long)(s1.redir_ok - s0.redir_ok), (unsigned long long)(s1.redir_fail - s0.redir_fail),
			       (unsigned long long)(s1.msg_ok - s0.msg_ok), (unsigned long long)(s1.msg_calls - s0.msg_calls),
			       (unsigned long long)(f1.bytes + f2.bytes));
		if (sockmap && g_verbose)
			printf(" proxy_reads %d/%d", f1.reads, f2.reads);
		read_ctrs(c1);
		printf("\n    tcp:");
		for (int i = 0; i < NCTR; i++)
			if (c1[i] != c0[i])
				printf(" %s=%lld", ctr_names[i], c1[i] - c0[i]);
		printf("\n");
		for (int i = 0; i < 2; i++) {
			struct dir_result *d = ds[i];
			if (d->stall)
				printf("    %s: STALL after %llu of %llu bytes (no data for %ds)%s; finally got %llu\n", d->name,
				       (unsigned long long)(d->kicked ? d->got_at_stall : d->got), (unsigned long long)g_n, g_idle_timeout,
				       d->kicked ? (d->recovered ? ": the missing tail ARRIVED after the sender pushed 256 KiB more (stuck, not lost)"
								  : ": still nothing after the sender pushed 256 KiB more (lost)") : "",
				       (unsigned long long)d->got);
			if (d->corrupt & 1)
				printf("    %s: CORRUPT at offset %llu: data came from %s-direction offset %lld (jump back %lld bytes), "
				       "replayed %llu bytes, then continued at offset %lld\n",
				       d->name, (unsigned long long)d->bad_off, d->src_dir ? d->src_dir : "?", (long long)d->src_off,
				       d->src_off >= 0 ? (long long)d->bad_off - d->src_off : 0LL, (unsigned long long)d->replay_len,
				       (long long)d->after_replay);
			else if (d->corrupt & 2)
				printf("    %s: SHA-256 mismatch only\n", d->name);
		}
		if (g_trace) {
			usleep(200000); /* let the ring buffer consumer catch up */
			uint64_t ing[2] = {ck_pa, ck_pu}; /* c2s data arrives on pa, s2c on pu */
			for (int i = 0; i < 2; i++)
				if ((ds[i]->corrupt & 1) || g_verbose) {
					printf("    %s:\n", ds[i]->name);
					explain(ing[i], ds[i]->bad_off, ds[i]->corrupt & 1 ? ds[i]->src_off : -1, ds[i]->seed);
				}
		}
		fflush(stdout);
	}
	printf("SUMMARY mode=%s parse=%d proxy_sndbuf=%d ep_rcvbuf=%d n=%llu runs=%d corrupt=%d stall=%d mean=%.2f GiB/s/dir",
	       mode_names[g_mode], g_parse, g_sndbuf, g_rcvbuf, (unsigned long long)g_n, done, corrupt_runs, stall_runs,
	       done ? rate_sum / done : 0);
	printf("\n");
	if (g_trace) {
		atomic_store(&tr_stop, 1);
		pthread_join(trt, NULL);
	}
	return 0;
}
