/* egress.bpf.c: the program attached at TC egress of the same interfaces as the entry
 * program, where the server's packets leave for the client: what the server has
 * acknowledged, the window it offers and what it has sent go into the flow entry, so the
 * entry program can tell which client bytes the server will take and which judged heads it
 * already has. Writes in place; never changes a packet. Not a stage of the chain (no
 * PROG_ARRAY slot, no context): the controller loads it with entry's maps (pd_flows,
 * pd_syn, pd_stats, ...), as it loads the stages. */
#include "pd_common.h"
#include "pd_parse.h"
#include "pd_segment.h"

/* Its own (not a pd_ map, which every object shares with the entry object): the option walk
 * of a SYN-ACK, in a map value like the stages' work areas. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pd_opt_walk);
} egress_work SEC(".maps");

/* The window scale a SYN-ACK sets (0 without the option, at most 14: RFC 7323 2.3), or -1
 * without the work area to read its options in. */
PD_INLINE int pd_synack_wscale(struct __sk_buff *skb, struct pd_pkt *p)
{
	__u32 z = 0;
	struct pd_opt_walk *w = bpf_map_lookup_elem(&egress_work, &z);
	if (!w)
		return -1;
	__u64 o = pd_tcp_options_in(skb, w, p->l4_off, p->payload_off);
	__u8 ws = ((o & PD_OPT_WS) && !(o & PD_OPT_BAD)) ? PD_OPT_WS_SHIFT(o) : 0;
	return ws > 14 ? 14 : ws;
}

SEC("tc")
int pd_egress(struct __sk_buff *skb)
{
	struct pd_pkt p = {};
	if (pd_parse_packet(skb, &p) != PD_P_TCP)
		return TC_ACT_OK;
	struct pd_flow_key k = { .sport = p.key.dport, .dport = p.key.sport, .family = p.key.family };
	__builtin_memcpy(k.saddr, p.key.daddr, sizeof(k.saddr));
	__builtin_memcpy(k.daddr, p.key.saddr, sizeof(k.daddr));
	/* Only what came from the server's side speaks for the server: a packet received on
	 * the interface the client's packets arrive on, and sent back out toward the client, is
	 * the client's (spoofed, routed back). The gateway's own replies (cloned at ingress) are
	 * ignored the same way. 0: made on this host (a server on the gateway itself). */
	__u32 came_in = skb->ingress_ifindex;
	struct pd_flow *f = bpf_map_lookup_elem(&pd_flows, &k);
	if (f && came_in && came_in == f->client_if) {
		pd_count(PD_C_EGRESS_CLIENT_SIDE);
		return TC_ACT_OK;
	}
	if (!f) {
		struct pd_syn *e = bpf_map_lookup_elem(&pd_syn, &k);
		if (!e)
			return TC_ACT_OK;
		if (came_in && came_in == e->client_if) {
			pd_count(PD_C_EGRESS_CLIENT_SIDE);
			return TC_ACT_OK;
		}
		if ((p.tcp_flags & (PD_TCP_SYN | PD_TCP_ACK | PD_TCP_RST)) != (PD_TCP_SYN | PD_TCP_ACK) ||
		    p.ack != e->isn + 1) {
			/* not the SYN-ACK of this SYN: a challenge ACK (the server has a connection
			 * on this 4-tuple and reads on in it) or a RST. The handshake never completes. */
			if (!e->refused)
				pd_count(PD_C_SYN_REFUSED);
			e->refused = 1;
			return TC_ACT_OK;
		}
		/* The server takes the SYN. The connection starts when the client acknowledges
		 * this SYN-ACK (the entry program): a spoofed source never does. */
		int ws = pd_synack_wscale(skb, &p);
		if (ws < 0)
			return TC_ACT_OK;
		e->srv_wscale = (__u8)ws;
		e->srv_isn = p.seq;
		e->srv_win = p.win;
		e->synack = 1;
		return TC_ACT_OK;
	}
	if ((p.tcp_flags & PD_TCP_RST) || !(p.tcp_flags & PD_TCP_ACK))
		return TC_ACT_OK;
	__u32 end = p.seq + p.payload_len + !!(p.tcp_flags & PD_TCP_SYN) + !!(p.tcp_flags & PD_TCP_FIN);
	if (p.tcp_flags & PD_TCP_SYN) {
		if (f->srv == PD_SRV_SEEN) {
			if (!f->syn_pending || p.ack != f->syn_isn + 1)
				return TC_ACT_OK; /* a SYN-ACK sent again */
			/* the server took a SYN on a 4-tuple it had a connection on: a new one */
			pd_flow_start(f, f->syn_isn, 0, 0);
		}
		/* the SYN-ACK: the window scale it sets, and a window that is never scaled */
		int ws = pd_synack_wscale(skb, &p);
		if (ws < 0)
			return TC_ACT_OK;
		f->srv_wscale = (__u8)ws;
		f->srv_data = end;
		f->srv_nxt = end;
		f->srv_ack = p.ack;
		f->srv_edge = p.ack + p.win;
		f->srv = PD_SRV_SEEN;
		return TC_ACT_OK;
	}
	if (f->srv != PD_SRV_SEEN)
		return TC_ACT_OK;
	/* only ever forward: a reordered packet says nothing new (and the cache line is left
	 * alone when nothing changes) */
	if (pd_seq_before(f->srv_nxt, end))
		f->srv_nxt = end;
	if (pd_seq_before(f->srv_ack, p.ack))
		f->srv_ack = p.ack;
	__u32 edge = p.ack + ((__u32)p.win << (f->srv_wscale & 15));
	if (!(p.tcp_flags & PD_TCP_SYN) && pd_seq_before(f->srv_edge, edge))
		f->srv_edge = edge;
	/* WebSocket, h2c: the server's first bytes answer the connection's first request, which
	 * asked to switch protocols. A 101 there means the server reads no more HTTP/1.x on this
	 * connection: neither does the gateway (what follows is frames, not request heads). */
	if (f->upgrade == PD_UP_ASKED && f->verdict == PD_ACT_ALLOW && p.seq == f->srv_data && p.payload_len >= 12) {
		__u8 st[12];
		if (bpf_skb_load_bytes(skb, p.payload_off, st, sizeof(st)) == 0 && st[0] == 'H' && st[1] == 'T' &&
		    st[2] == 'T' && st[3] == 'P' && st[4] == '/' && st[5] == '1' && st[6] == '.' && st[7] == '1' &&
		    st[8] == ' ' && st[9] == '1' && st[10] == '0' && st[11] == '1') {
			f->upgrade = PD_UP_SWITCHED;
			f->verdict = PD_ACT_ALLOW;
			f->state = PD_FS_FINAL;
			pd_count(PD_C_UPGRADED);
		}
	}
	return TC_ACT_OK;
}
