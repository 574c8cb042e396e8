// sk_skb / sk_msg programs for the sockmap forwarding probe.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define BPF_F_INGRESS_ 1

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 64);
	__type(key, __u64);	/* socket cookie */
	__type(value, __u64);
} sock_hash SEC(".maps");

/* second sockhash used only by the sk_msg variant */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u64);
} msg_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);	/* cookie of the socket the data arrived on / was sent on */
	__type(value, __u64);	/* cookie of the socket to redirect to */
} peer SEC(".maps");

/* sk_msg cannot call bpf_get_socket_cookie: key by (local_port << 16 | remote_port), host order */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);	/* cookie (msg_hash key) of the socket to redirect to */
} peer_ports SEC(".maps");

/* per-socket stream offset of the next skb seen by the verdict program */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u64);
} stream_off SEC(".maps");

struct skb_ev {
	__u64 cookie;
	__u64 off;	/* stream offset of the skb's first byte on the ingress socket */
	__u32 len;
	__u32 pad;
	__u8 head[32];	/* first payload bytes: the test pattern encodes its own stream offset */
};
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 << 20);
} skblog SEC(".maps");

struct sm_cfg {
	__u64 redir_flags;	/* 0 = egress, 1 = BPF_F_INGRESS */
	__u32 parse_limit;	/* stream parser: max message size (0 = whole skb) */
	__u32 log_skbs;		/* record (stream offset, len) of every skb in skblog */
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_cfg);
} sm_config SEC(".maps");

struct sm_stats {
	__u64 verdict_calls, verdict_bytes, redir_ok, redir_fail;
	__u64 msg_calls, msg_bytes, msg_ok, msg_pass;
	__u64 parse_calls;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_stats);
} sm_stats SEC(".maps");

static __always_inline struct sm_stats *st(void)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&sm_stats, &k);
}

static __always_inline struct sm_cfg *cf(void)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&sm_config, &k);
}

SEC("sk_skb/stream_parser")
int sm_parser(struct __sk_buff *skb)
{
	struct sm_cfg *c = cf();
	struct sm_stats *s = st();
	if (s)
		s->parse_calls++;
	if (c && c->parse_limit && skb->len > c->parse_limit)
		return c->parse_limit;
	return skb->len;
}

SEC("sk_skb/stream_verdict")
int sm_verdict(struct __sk_buff *skb)
{
	__u64 ck = bpf_get_socket_cookie(skb);
	struct sm_stats *s = st();
	struct sm_cfg *c = cf();
	__u64 *pc;
	long r;

	if (s) {
		s->verdict_calls++;
		s->verdict_bytes += skb->len;
	}
	if (c && c->log_skbs) {
		__u64 *so = bpf_map_lookup_elem(&stream_off, &ck);
		if (so) {
			struct skb_ev e = {.cookie = ck, .off = *so, .len = skb->len};
			*so += skb->len;
			if (skb->len >= 32)
				bpf_skb_load_bytes(skb, 0, e.head, 32);
			bpf_ringbuf_output(&skblog, &e, sizeof(e), 0);
		}
	}
	pc = bpf_map_lookup_elem(&peer, &ck);
	if (!pc || !c) {
		/* not a proxied socket (e.g. an endpoint used only as an ingress target) */
		if (s)
			s->redir_fail++;
		return SK_PASS;
	}
	r = bpf_sk_redirect_hash(skb, &sock_hash, pc, c->redir_flags);
	if (s) {
		if (r == SK_PASS)
			s->redir_ok++;
		else
			s->redir_fail++;
	}
	return r;
}

SEC("sk_msg")
int sm_msg(struct sk_msg_md *msg)
{
	__u32 pk = (msg->local_port << 16) | (bpf_ntohl(msg->remote_port) & 0xffff);
	struct sm_stats *s = st();
	struct sm_cfg *c = cf();
	__u64 *pc;

	if (s) {
		s->msg_calls++;
		s->msg_bytes += msg->size;
	}
	pc = bpf_map_lookup_elem(&peer_ports, &pk);
	if (!pc || !c) {
		if (s)
			s->msg_pass++;
		return SK_PASS;
	}
	if (s)
		s->msg_ok++;
	return bpf_msg_redirect_hash(msg, &msg_hash, pc, c->redir_flags);
}

char LICENSE[] SEC("license") = "GPL";
