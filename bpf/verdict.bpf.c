/* verdict.bpf.c: the last stage. Applies the fail mode, the default action, and the
 * decided action: allow (advance the flow past this request, then judge the next
 * pipelined head of the segment), deny (HTTP 403 to the client and RST to the server;
 * RST both ways for TLS), drop, reset. Records the outcome in the flow entry. */
#include "pd_common.h"
#include "pd_reply.h"

static const char resp_403[] =
	"HTTP/1.1 403 Forbidden\r\n"
	"Server: policyd\r\n"
	"Content-Type: text/plain\r\n"
	"Content-Length: 25\r\n"
	"Connection: close\r\n"
	"\r\n"
	"Request denied by policy\n";

/* RST to the client (a clone sent back out of the ingress interface), then the packet
 * itself becomes the RST to the server. An HTTP reply goes in place of the client RST. */
PD_INLINE int pd_reply_both(struct __sk_buff *skb, struct pd_ctx *ctx, int http)
{
	int kind = http ? PD_REPLY_HTTP : PD_REPLY_RST_CLIENT;
	if (pd_build(skb, ctx, kind, resp_403, http ? sizeof(resp_403) - 1 : 0, 1) < 0)
		goto fail;
	if (bpf_clone_redirect(skb, ctx->ifindex, 0) < 0)
		goto fail;
	if (pd_build(skb, ctx, PD_REPLY_RST_SERVER, 0, 0, 1) < 0)
		goto fail;
	return TC_ACT_OK;
fail:
	pd_count(PD_C_REASON_BASE + PD_R_REPLY_FAILED);
	return TC_ACT_SHOT;
}

SEC("tc")
int pd_verdict(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	pd_stage_enter(ctx, PD_STAGE_VERDICT);
	/* one packet, one generation: the half it ran in must not have been refilled under it */
	__u32 g = ctx->gen & 1;
	__u32 *tag = bpf_map_lookup_elem(&pd_gen_tags, &g);
	if (tag && *tag != ctx->gen_tag)
		pd_count_ctx(ctx, PD_C_GEN_MISMATCH);

	struct pd_flow *f = bpf_map_lookup_elem(&pd_flows, &ctx->key);
	__u8 action = ctx->action;
	int lost_boundary = 0;

	if (ctx->reason != PD_R_NONE) {
		pd_count_ctx(ctx, PD_C_REASON_BASE + ctx->reason);
		/* without a parsed head we no longer know where requests begin */
		lost_boundary = ctx->head_len == 0 || ctx->reason == PD_R_BAD_BODY ||
				ctx->reason == PD_R_SMUGGLING;
		if (ctx->fail_open) {
			pd_count_ctx(ctx, PD_C_FAIL_OPEN);
			action = PD_ACT_ALLOW;
		} else {
			action = (ctx->proto == PD_PROTO_HTTP && ctx->head_len) ? PD_ACT_DENY
										: PD_ACT_RESET;
		}
	}
	if (action == PD_ACT_NONE)
		action = ctx->default_action ? ctx->default_action : PD_ACT_DENY;
	if (ctx->preflight) {
		/* a probe of a prepared generation: say the decision, touch nothing */
		if (f)
			bpf_map_delete_elem(&pd_flows, &ctx->key);
		return PD_PREFLIGHT_RET + action;
	}
	pd_count(PD_C_VERDICT_BASE + (action & (PD_ACT_MAX - 1)));

	if (action == PD_ACT_ALLOW) {
		if (!f)
			return TC_ACT_OK;
		f->verdict = PD_ACT_ALLOW;
		f->gen = ctx->gen;
		f->rule = ctx->rule;
		if (lost_boundary || ctx->proto != PD_PROTO_HTTP) {
			f->state = PD_FS_FINAL; /* nothing more to judge on this connection */
			return TC_ACT_OK;
		}
		f->requests++;
		f->last_ns = bpf_ktime_get_ns();
		__u32 head_end = ctx->head.start_seq + ctx->head_len;
		if (ctx->chunked) {
			f->state = PD_FS_CHUNKED;
			f->chunk_state = PD_CK_SIZE;
			f->chunk_left = 0;
			f->next_seq = head_end;
		} else {
			f->state = PD_FS_HEAD;
			f->next_seq = head_end + ctx->body_len;
		}
		__u32 seg_end = ctx->seq + ctx->payload_len;
		if (!pd_seq_before(f->next_seq, seg_end))
			return TC_ACT_OK;
		/* More of this segment follows the request: judge the next head (or walk the
		 * chunked body) before anything of it passes. */
		if (ctx->pipelined + 1 < ctx->max_pipeline) {
			ctx->reenter = 1;
			ctx->stage = PD_STAGE_VERDICT;
			bpf_tail_call(skb, &pd_progs, (__u32)(ctx->gen & 1) * PD_STAGE_MAX + PD_STAGE_ENTRY);
			ctx->reenter = 0;
		}
		/* Out of tail calls: pass what was judged; TCP resends the rest. */
		pd_count(PD_C_REASON_BASE + PD_R_TOO_MANY_REQUESTS);
		if (pd_truncate(skb, ctx, f->state == PD_FS_CHUNKED ? head_end : f->next_seq) < 0)
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}

	/* A refused head that does not start this segment follows bytes that were judged
	 * (pipelined requests, the end of a body): pass those, hold the head back. TCP
	 * resends it, and it is judged again as the first head of a segment. */
	if (f && ctx->head_len && pd_seq_before(ctx->seq, ctx->head.start_seq)) {
		if (pd_truncate(skb, ctx, ctx->head.start_seq) < 0)
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}
	if (f) {
		f->state = PD_FS_FINAL;
		f->verdict = action;
		f->gen = ctx->gen;
		f->rule = ctx->rule;
	}
	switch (action) {
	case PD_ACT_DROP:
		return TC_ACT_SHOT;
	case PD_ACT_DENY:
		return pd_reply_both(skb, ctx, ctx->proto == PD_PROTO_HTTP && ctx->head_len);
	default: /* reset, and anything this build does not know: refuse */
		return pd_reply_both(skb, ctx, 0);
	}
}
