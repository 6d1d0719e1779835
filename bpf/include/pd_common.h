/* pd_common.h: BPF-side helpers shared by every stage — counters, the scratch context,
 * the chain hand-off (chain_next), the keyed name/path hash, and byte classes. */
#ifndef PD_COMMON_H
#define PD_COMMON_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pd_abi.h"
#include "pd_state.h"
#include "pd_maps.h"
#include "pd_event.h"

#define PD_INLINE static __always_inline

PD_INLINE void pd_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&pd_stats, &idx);
	if (v)
		*v += 1;
}

/* Counting for a packet: preflight probes are not traffic, so they are not counted. */
PD_INLINE void pd_count_ctx(struct pd_ctx *ctx, __u32 idx)
{
	if (!ctx->preflight)
		pd_count(idx);
}

/* This CPU's scratch context as it is: for the entry program, which stamps it. */
PD_INLINE struct pd_ctx *pd_scratch_ctx(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&pd_scratch, &zero);
}

PD_INLINE struct pd_ctx *pd_ctx_get(void)
{
	struct pd_ctx *ctx = pd_scratch_ctx();
	/* A stage reached by tail call trusts only a context the entry program stamped. */
	if (ctx && ctx->magic == PD_CTX_MAGIC && ctx->version == PD_CTX_VERSION)
		return ctx;
	return 0;
}

/* Fail mode for an event the dataplane cannot judge: record the reason; the verdict
 * stage turns it into deny (closed) or allow (open). Only the first reason is kept. */
PD_INLINE void pd_fail(struct pd_ctx *ctx, __u8 reason)
{
	if (ctx->reason == PD_R_NONE)
		ctx->reason = reason;
}

/* Evidence that the gateway is being shown other bytes than the server acts on (judged
 * bytes arriving changed, urgent data in a head), or a client's own excess (more partial
 * heads held than its share: under fail_mode open it would buy itself an unjudged request):
 * reset whatever the fail mode says. */
PD_INLINE int pd_reason_evasion(__u8 reason)
{
	return reason == PD_R_INCONSISTENT || reason == PD_R_URGENT || reason == PD_R_PARTIAL_HEADS;
}

/* Verdict to use without running the verdict stage (no chain, missed tail call). A caller
 * without a context logs its own event (pd_log_flow). */
PD_INLINE int pd_fail_inline(struct pd_ctx *ctx, __u8 reason)
{
	int open = ctx && ctx->fail_open && !pd_reason_evasion(reason);
	if (ctx && ctx->preflight)
		return PD_PREFLIGHT_RET + (open ? PD_ACT_ALLOW : PD_ACT_DROP);
	pd_count(PD_C_REASON_BASE + reason);
	if (ctx) {
		ctx->reason = reason; /* this decision's reason, whatever a stage recorded before */
		pd_log_ctx(ctx, open ? PD_ACT_ALLOW : PD_ACT_DROP, 0, ctx->stage);
	}
	if (open) {
		pd_count(PD_C_FAIL_OPEN);
		return TC_ACT_OK;
	}
	return TC_ACT_SHOT;
}

/* The only tail call in bpf/ (the build fails on any other: check_tail_calls.cmake), so
 * every program finds a stage in the slot where the controller put it (pd_slot). Returns
 * only when the call did not happen: an empty slot, or the kernel's budget spent. */
PD_INLINE void pd_tail_call(struct __sk_buff *skb, __u32 gen, __u32 stage)
{
	bpf_tail_call(skb, &pd_progs, pd_slot(gen, stage));
}

/* Hand the packet to the stage that follows ctx->stage in this packet's generation.
 * Every slot index is derived from ctx->gen, read once by the entry program, so one
 * packet never mixes generations. A missing slot is a counted reason, never a pass. */
PD_INLINE int pd_tail(struct __sk_buff *skb, struct pd_ctx *ctx, __u32 stage)
{
	__u32 gen = ctx->gen;
	ctx->from_stage = ctx->stage;
	ctx->stage = stage;
	pd_tail_call(skb, gen, stage);
	ctx->stage = ctx->from_stage; /* still in the caller: it decides, by the fail mode */
	return pd_fail_inline(ctx, PD_R_MISSED_TAIL_CALL);
}

PD_INLINE int pd_chain_next(struct __sk_buff *skb, struct pd_ctx *ctx)
{
	/* A final decision skips the remaining policy stages. */
	if (ctx->reason != PD_R_NONE ||
	    (ctx->action != PD_ACT_NONE && ctx->action != PD_ACT_ALLOW))
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	__u32 idx = pd_slot(ctx->gen, ctx->stage);
	__u32 *next = bpf_map_lookup_elem(&pd_chain, &idx);
	if (!next || *next == PD_STAGE_NONE || *next >= PD_STAGE_MAX)
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	return pd_tail(skb, ctx, *next);
}

PD_INLINE void pd_stage_enter(struct pd_ctx *ctx, __u32 stage)
{
	ctx->stage = stage;
	pd_count_ctx(ctx, PD_C_STAGE_BASE + stage);
}

/* ---- keyed FNV-1a-64, the hash of host and path tables -------------------------------
 * The controller computes the same function (chain/hash.hpp). Hash hits are always
 * verified against the stored pattern, so a collision can only cost a lookup, never a
 * wrong match. */
#define PD_FNV_OFFSET 0xcbf29ce484222325ULL
#define PD_FNV_PRIME 0x100000001b3ULL

PD_INLINE __u64 pd_hash_init(__u64 seed)
{
	return PD_FNV_OFFSET ^ seed;
}

PD_INLINE __u64 pd_hash_byte(__u64 h, __u8 b)
{
	return (h ^ b) * PD_FNV_PRIME;
}

PD_INLINE __u8 pd_lower(__u8 c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

PD_INLINE int pd_is_digit(__u8 c)
{
	return c >= '0' && c <= '9';
}

PD_INLINE int pd_hexval(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* a byte of a (lower-cased) host name as policies may name it */
PD_INLINE int pd_is_name_char(__u8 c)
{
	return (c >= 'a' && c <= 'z') || pd_is_digit(c) || c == '-' || c == '.' || c == '_';
}

/* RFC 9110 tchar */
PD_INLINE int pd_is_tchar(__u8 c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || pd_is_digit(c))
		return 1;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
	case '-': case '.': case '^': case '_': case '`': case '|': case '~':
		return 1;
	}
	return 0;
}

/* ---- word-at-a-time byte tests (SWAR): a whole 8-byte word at once where no byte in it
 * needs attention, a byte at a time otherwise ------------------------------------------ */
#define PD_ONES 0x0101010101010101ULL
#define PD_HIGHS 0x8080808080808080ULL

PD_INLINE __u64 pd_has_zero(__u64 v)
{
	return (v - PD_ONES) & ~v & PD_HIGHS;
}

PD_INLINE __u64 pd_has_byte(__u64 v, __u8 b)
{
	return pd_has_zero(v ^ (PD_ONES * b));
}

/* some byte < n (n <= 128) */
PD_INLINE __u64 pd_has_less(__u64 v, __u8 n)
{
	return (v - PD_ONES * n) & ~v & PD_HIGHS;
}

/* Chunk i of len bytes at skb offset off, into buf (size bytes): the bytes loaded, 0 past the
 * end, -1 if the skb is shorter. For bpf_loop callbacks that walk payload in chunks. */
PD_INLINE int pd_load_chunk(struct __sk_buff *skb, __u32 off, __u32 len, __u32 i, __u8 *buf, __u32 size)
{
	__u32 done = i * size;
	if (done >= len)
		return 0;
	__u32 n = len - done;
	if (n > size)
		n = size;
	if (n < 1 || bpf_skb_load_bytes(skb, off + done, buf, n) < 0)
		return -1;
	return n;
}

/* Bounded index into a buffer of size 2^k + slack: keeps the verifier convinced. */
#define PD_HEAD_IDX(i) ((i) & (PD_HEAD_MAX - 1))
#define PD_PATH_IDX(i) ((i) & (PD_PATH_MAX - 1))
#define PD_HOST_IDX(i) ((i) & (PD_HOST_MAX - 1))

char LICENSE[] SEC("license") = "GPL";

#endif /* PD_COMMON_H */
