/* pd_parse.h: L2-L4 parsing for the entry program — Ethernet (+ up to two 802.1Q/802.1ad
 * tags), IPv4 (with options; fragments flagged), IPv6 (extension headers, any size, up to
 * PD_IPV6_EXT_MAX of them), TCP. Headers past the fixed ones are read with
 * bpf_skb_load_bytes, so where they sit in the packet does not matter. */
#ifndef PD_PARSE_H
#define PD_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include "pd_common.h"

#define PD_VLAN_MAX 2
/* Linux walks any number of extension headers; past this many the entry program does not
 * know what the packet carries, and it gets the fail mode (PD_P_UNWALKABLE). */
#define PD_IPV6_EXT_MAX 16

struct pd_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

enum pd_parse_result {
	PD_P_TCP = 0,       /* a TCP segment, pkt filled */
	PD_P_OTHER = 1,     /* not TCP over IP: not ours */
	PD_P_SHORT = 2,     /* headers not in the linear area (pull and retry) */
	PD_P_FRAGMENT = 3,  /* first fragment of a fragmented TCP datagram; only the ports filled */
	PD_P_LATER_FRAG = 4,/* non-first fragment: no TCP header to look at */
	PD_P_BAD = 5,       /* inconsistent lengths */
	PD_P_UDP = 6,       /* a UDP datagram (or its first fragment): ports filled */
	PD_P_UNWALKABLE = 7,/* an IPv6 header chain longer than PD_IPV6_EXT_MAX: addresses filled,
			     * what it carries unknown */
};

struct pd_pkt {
	struct pd_flow_key key;
	__u16 l3_off;
	__u16 l4_off;
	__u16 payload_off;
	__u8 family;
	__u8 tcp_flags;
	__u32 seq;
	__u32 ack;
	__u32 payload_len;
	__u16 dport; /* host order */
	__u8 ttl;    /* IPv4 TTL / IPv6 hop limit */
	__u8 pad;
	__u16 win;   /* the TCP window field, host order (unscaled) */
	__u16 pad2;
};

/* TCP flag bits as in byte 13 of the header */
#define PD_TCP_FIN 0x01
#define PD_TCP_SYN 0x02
#define PD_TCP_RST 0x04
#define PD_TCP_PSH 0x08
#define PD_TCP_ACK 0x10
#define PD_TCP_URG 0x20

/* The ports of a transport header that may be cut short (a first fragment): 4 bytes. */
PD_INLINE int pd_parse_ports(struct __sk_buff *skb, struct pd_pkt *p, __u32 l4_off, int result)
{
	__be16 ports[2];
	if (l4_off > 0xffff || bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
		return PD_P_BAD; /* beyond the packet: the receiver drops it too */
	p->l4_off = l4_off;
	p->key.sport = ports[0];
	p->key.dport = ports[1];
	p->dport = bpf_ntohs(ports[1]);
	return result;
}

PD_INLINE int pd_parse_tcp(struct __sk_buff *skb, struct pd_pkt *p, __u32 l4_off, __u32 l4_len)
{
	struct tcphdr th;
	if (l4_off > 0xffff || bpf_skb_load_bytes(skb, l4_off, &th, sizeof(th)) < 0)
		return PD_P_BAD;
	__u32 doff = (__u32)th.doff * 4;
	if (doff < sizeof(th) || doff > l4_len || l4_off + doff > 0xffff)
		return PD_P_BAD;
	p->l4_off = l4_off;
	p->payload_off = l4_off + doff;
	p->payload_len = l4_len - doff;
	p->key.sport = th.source;
	p->key.dport = th.dest;
	p->dport = bpf_ntohs(th.dest);
	p->seq = bpf_ntohl(th.seq);
	p->ack = bpf_ntohl(th.ack_seq);
	p->tcp_flags = ((__u8 *)&th)[13];
	p->win = bpf_ntohs(th.window);
	return PD_P_TCP;
}

PD_INLINE int pd_v6_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH ||
	       nh == IPPROTO_FRAGMENT;
}

/* The walk over an IPv6 header chain, one extension header per bpf_loop step. */
struct pd_v6walk {
	struct __sk_buff *skb;
	__u32 l4;         /* offset of the header named by nh */
	__u32 ext;        /* bytes of extension headers walked */
	__u8 nh;          /* the next header number */
	__u8 first_frag;  /* a fragment header with offset 0 and more fragments */
	__u8 result;      /* 0 while walking; a pd_parse_result when the walk decided */
	__u8 pad;
};

static long pd_v6_step(__u32 i, void *data)
{
	struct pd_v6walk *w = data;
	__u8 nh = w->nh;
	if (nh == IPPROTO_TCP || nh == IPPROTO_UDP)
		return 1;
	if (!pd_v6_ext(nh)) {
		w->result = PD_P_OTHER; /* ICMPv6, ESP, no next header, ...: not TCP we can see */
		return 1;
	}
	__u8 eh[4];
	__u32 at = w->l4;
	if (at > 0xffff || bpf_skb_load_bytes(w->skb, at, eh, sizeof(eh)) < 0) {
		w->result = PD_P_BAD; /* a header beyond the packet: the receiver drops it */
		return 1;
	}
	__u32 hlen;
	if (nh == IPPROTO_AH) {
		hlen = ((__u32)eh[1] + 2) * 4;
	} else if (nh == IPPROTO_FRAGMENT) {
		__u16 fo = ((__u16)eh[2] << 8) | eh[3];
		if (fo & 0xfff8) {
			w->result = PD_P_LATER_FRAG;
			return 1;
		}
		if (fo & 1)
			w->first_frag = 1;
		hlen = 8;
	} else {
		hlen = ((__u32)eh[1] + 1) * 8;
	}
	w->nh = eh[0];
	w->l4 = at + hlen;
	w->ext += hlen;
	return 0;
}

PD_INLINE int pd_parse_packet(struct __sk_buff *skb, struct pd_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);

	if ((void *)(eth + 1) > data_end)
		return PD_P_SHORT;
	__be16 proto = eth->h_proto;

	for (int i = 0; i < PD_VLAN_MAX; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct pd_vlan_hdr *vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return PD_P_SHORT;
		proto = vh->proto;
		off += sizeof(*vh);
	}

	p->l3_off = off;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;
		if ((void *)(iph + 1) > data_end)
			return PD_P_SHORT;
		if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
			return PD_P_OTHER;
		__u32 ihl = (__u32)iph->ihl * 4;
		__u32 tot = bpf_ntohs(iph->tot_len);
		if (tot == 0) /* BIG TCP / GSO super-packet: length from the skb */
			tot = skb->len - off;
		if (ihl < sizeof(*iph) || tot < ihl || tot > skb->len - off)
			return PD_P_BAD;
		p->family = 4;
		p->key.family = 4;
		p->key.saddr[0] = iph->saddr;
		p->key.daddr[0] = iph->daddr;
		p->ttl = iph->ttl;
		__u16 frag = bpf_ntohs(iph->frag_off);
		if (frag & 0x1fff)
			return PD_P_LATER_FRAG;
		if (iph->protocol == IPPROTO_UDP)
			return pd_parse_ports(skb, p, off + ihl, PD_P_UDP);
		/* A first fragment is never parsed further: its TCP header may be cut short, and
		 * what follows it is judged by no one. The ports say whether it is ours. */
		if (frag & 0x2000)
			return pd_parse_ports(skb, p, off + ihl, PD_P_FRAGMENT);
		return pd_parse_tcp(skb, p, off + ihl, tot - ihl);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > data_end)
			return PD_P_SHORT;
		__u32 plen = bpf_ntohs(ip6->payload_len);
		if (plen == 0) /* jumbogram / BIG TCP */
			plen = skb->len - off - sizeof(*ip6);
		if (plen > skb->len - off - sizeof(*ip6))
			return PD_P_BAD;
		p->family = 6;
		p->key.family = 6;
		__builtin_memcpy(p->key.saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->key.daddr, &ip6->daddr, 16);
		p->ttl = ip6->hop_limit;
		struct pd_v6walk w = {
			.skb = skb,
			.l4 = off + sizeof(*ip6),
			.nh = ip6->nexthdr,
		};
		/* one callback, verified once, however long the chain */
		bpf_loop(PD_IPV6_EXT_MAX, pd_v6_step, &w, 0);
		if (w.result)
			return w.result;
		__u8 nh = w.nh;
		__u32 l4 = w.l4 & 0x1ffff;
		__u32 ext = w.ext & 0x1ffff;
		int first_frag = w.first_frag;
		if (pd_v6_ext(nh))
			return PD_P_UNWALKABLE;
		if (nh != IPPROTO_TCP && nh != IPPROTO_UDP)
			return PD_P_OTHER;
		if (ext > plen)
			return PD_P_BAD;
		if (nh == IPPROTO_UDP)
			return pd_parse_ports(skb, p, l4, PD_P_UDP);
		if (first_frag)
			return pd_parse_ports(skb, p, l4, PD_P_FRAGMENT);
		return pd_parse_tcp(skb, p, l4, plen - ext);
	}
	return PD_P_OTHER;
}

/* seq arithmetic (RFC 1982 style) */
PD_INLINE int pd_seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

PD_INLINE int pd_seq_before_eq(__u32 a, __u32 b)
{
	return (__s32)(a - b) <= 0;
}

#endif /* PD_PARSE_H */
