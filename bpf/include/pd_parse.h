/* pd_parse.h: L2-L4 parsing for the entry program — Ethernet (+ up to two 802.1Q/802.1ad
 * tags), IPv4 (with options; fragments flagged), IPv6 (bounded extension headers), TCP. */
#ifndef PD_PARSE_H
#define PD_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include "pd_common.h"

#define PD_VLAN_MAX 2
#define PD_IPV6_EXT_MAX 4

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
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (l4_off > 512)
		return PD_P_BAD;
	__be16 *ports = data + l4_off;
	if ((void *)(ports + 2) > data_end)
		return PD_P_SHORT;
	p->l4_off = l4_off;
	p->key.sport = ports[0];
	p->key.dport = ports[1];
	p->dport = bpf_ntohs(ports[1]);
	return result;
}

PD_INLINE int pd_parse_tcp(struct __sk_buff *skb, struct pd_pkt *p, __u32 l4_off, __u32 l4_len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (l4_off > 512)
		return PD_P_BAD;
	struct tcphdr *th = data + l4_off;
	if ((void *)(th + 1) > data_end)
		return PD_P_SHORT;
	__u32 doff = (__u32)th->doff * 4;
	if (doff < sizeof(*th) || doff > l4_len)
		return PD_P_BAD;
	p->l4_off = l4_off;
	p->payload_off = l4_off + doff;
	p->payload_len = l4_len - doff;
	p->key.sport = th->source;
	p->key.dport = th->dest;
	p->dport = bpf_ntohs(th->dest);
	p->seq = bpf_ntohl(th->seq);
	p->ack = bpf_ntohl(th->ack_seq);
	p->tcp_flags = ((__u8 *)th)[13];
	p->win = bpf_ntohs(th->window);
	return PD_P_TCP;
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
		__u8 nh = ip6->nexthdr;
		__u32 l4 = off + sizeof(*ip6);
		__u32 ext = 0;
		int first_frag = 0;
		for (int i = 0; i < PD_IPV6_EXT_MAX; i++) {
			if (nh == IPPROTO_TCP || nh == IPPROTO_UDP)
				break;
			__u8 *eh = data + l4;
			if ((void *)(eh + 8) > data_end)
				return PD_P_SHORT;
			__u32 hlen;
			if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS)
				hlen = ((__u32)eh[1] + 1) * 8;
			else if (nh == IPPROTO_AH)
				hlen = ((__u32)eh[1] + 2) * 4;
			else if (nh == IPPROTO_FRAGMENT) {
				__u16 fo = ((__u16)eh[2] << 8) | eh[3];
				if (fo & 0xfff8)
					return PD_P_LATER_FRAG;
				if (fo & 1)
					first_frag = 1;
				hlen = 8;
			} else
				return PD_P_OTHER;
			nh = eh[0];
			l4 += hlen;
			ext += hlen;
		}
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
