/* verdict.bpf.c: the last stage. Applies the fail mode, the default action, and the
 * decided action: allow (advance the flow past this request, then judge the next
 * pipelined head of the segment), deny (HTTP 403 to the client and RST to the server;
 * RST both ways for TLS), unauthorized (the same with a 401), drop, reset, hold (drop the
 * segment until the daemon has verified a token). Records the outcome in the flow entry. */
#include "pd_common.h"
#include "pd_reply.h"
#include "pd_segment.h"

static const char resp_403[] =
	"HTTP/1.1 403 Forbidden\r\n"
	"Server: policyd\r\n"
	"Content-Type: text/plain\r\n"
	"Content-Length: 25\r\n"
	"Connection: close\r\n"
	"\r\n"
	"Request denied by policy\n";

/* 401 for a refused token (RFC 6750 3.1), saying why. */
#define RESP_401(why)                                                                              \
	"HTTP/1.1 401 Unauthorized\r\n"                                                             \
	"Server: policyd\r\n"                                                                       \
	"WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"" why "\"\r\n"       \
	"Content-Length: 0\r\n"                                                                     \
	"Connection: close\r\n"                                                                     \
	"\r\n"

static const char r401_missing[] = RESP_401("no bearer token");
static const char r401_malformed[] = RESP_401("malformed token");
static const char r401_too_large[] = RESP_401("token too large");
static const char r401_alg[] = RESP_401("algorithm not allowed");
static const char r401_kid[] = RESP_401("unknown key id");
static const char r401_signature[] = RESP_401("invalid signature");
static const char r401_expired[] = RESP_401("token expired");
static const char r401_nbf[] = RESP_401("token not yet valid");
static const char r401_iss[] = RESP_401("wrong issuer");
static const char r401_aud[] = RESP_401("wrong audience");
static const char r401_claim[] = RESP_401("required claim missing");
static const char r401_other[] = RESP_401("invalid token");

#define PD_RESP(r) { .body = (r), .len = sizeof(r) - 1 }
struct resp {
	const char *body;
	__u32 len;
};

/* 429 with the rate limit's Retry-After, composed in the context's work area (the stages
 * that used it are done). */
/* const volatile: kept in .rodata as arrays (clang 14 would put plain const strings that are
 * copied into mergeable string sections, whose BTF the kernel refuses) */
const volatile char r429_head[] = "HTTP/1.1 429 Too Many Requests\r\n"
				"Server: policyd\r\n"
				"Retry-After: ";
const volatile char r429_tail[] = "\r\nContent-Length: 0\r\n"
				"Connection: close\r\n"
				"\r\n";

PD_INLINE struct resp resp_429(struct pd_ctx *ctx)
{
	char *o = ctx->work.reply;
	__u32 n = sizeof(r429_head) - 1;
#pragma unroll
	for (__u32 i = 0; i < sizeof(r429_head) - 1; i++)
		o[i] = r429_head[i];
	char digits[10];
	__u32 v = ctx->retry_after, nd = 0;
#pragma unroll
	for (int i = 0; i < 10; i++) {
		if (i == 0 || v) {
			digits[i] = '0' + v % 10;
			v /= 10;
			nd = i + 1;
		}
	}
#pragma unroll
	for (int i = 9; i >= 0; i--)
		if ((__u32)i < nd)
			o[n++ & 127] = digits[i];
	if (n > sizeof(r429_head) - 1 + 10)
		n = sizeof(r429_head) - 1 + 10;
#pragma unroll
	for (__u32 i = 0; i < sizeof(r429_tail) - 1; i++)
		o[(n + i) & 127] = r429_tail[i];
	return (struct resp){ .body = o, .len = n + sizeof(r429_tail) - 1 };
}

PD_INLINE struct resp resp_for(struct pd_ctx *ctx, __u8 action)
{
	if (action == PD_ACT_REJECT)
		return resp_429(ctx);
	if (action != PD_ACT_UNAUTH)
		return (struct resp)PD_RESP(resp_403);
	switch (ctx->jwt_reason) {
	case PD_J_MISSING: return (struct resp)PD_RESP(r401_missing);
	case PD_J_MALFORMED: return (struct resp)PD_RESP(r401_malformed);
	case PD_J_TOO_LARGE: return (struct resp)PD_RESP(r401_too_large);
	case PD_J_ALG: return (struct resp)PD_RESP(r401_alg);
	case PD_J_UNKNOWN_KID: return (struct resp)PD_RESP(r401_kid);
	case PD_J_SIGNATURE: return (struct resp)PD_RESP(r401_signature);
	case PD_J_EXPIRED: return (struct resp)PD_RESP(r401_expired);
	case PD_J_NOT_YET_VALID: return (struct resp)PD_RESP(r401_nbf);
	case PD_J_ISSUER: return (struct resp)PD_RESP(r401_iss);
	case PD_J_AUDIENCE: return (struct resp)PD_RESP(r401_aud);
	case PD_J_CLAIM: return (struct resp)PD_RESP(r401_claim);
	default: return (struct resp)PD_RESP(r401_other);
	}
}

/* RST to the client (a clone sent back out of the ingress interface), then the packet
 * itself becomes the RST to the server. An HTTP reply (403, or 401 for a refused token)
 * goes in place of the client RST. */
PD_INLINE int pd_reply_both(struct __sk_buff *skb, struct pd_ctx *ctx, int http, __u8 action)
{
	int kind = http ? PD_REPLY_HTTP : PD_REPLY_RST_CLIENT;
	struct resp r = resp_for(ctx, action);
	if (pd_build(skb, ctx, kind, r.body, http ? r.len : 0, 1) < 0)
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
	/* the stage that handed over the decision (for its event) */
	__u8 decided_by = ctx->from_stage;
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
		if (ctx->fail_open && !pd_reason_evasion(ctx->reason)) {
			pd_count_ctx(ctx, PD_C_FAIL_OPEN);
			action = PD_ACT_ALLOW;
		} else {
			action = (ctx->proto == PD_PROTO_HTTP && ctx->head_len) ? PD_ACT_DENY
										: PD_ACT_RESET;
		}
	}
	if (action == PD_ACT_NONE) {
		action = ctx->default_action ? ctx->default_action : PD_ACT_DENY;
		decided_by = PD_STAGE_VERDICT; /* no rule decided: the default action */
	}
	if (ctx->preflight) {
		/* a probe of a prepared generation: say the decision, touch nothing */
		if (f)
			bpf_map_delete_elem(&pd_flows, &ctx->key);
		return PD_PREFLIGHT_RET + action;
	}
	pd_count(PD_C_VERDICT_BASE + (action & (PD_ACT_MAX - 1)));

	if (action == PD_ACT_ALLOW) {
		if (ctx->reason != PD_R_NONE)
			pd_log_ctx(ctx, PD_ACT_ALLOW, 0, decided_by); /* fail open */
		if (!f)
			return TC_ACT_OK;
		f->verdict = PD_ACT_ALLOW;
		f->gen = ctx->gen;
		f->rule = ctx->rule;
		if (ctx->head_len && ctx->head_len <= PD_HEAD_MAX) {
			/* what was judged, so another copy of these bytes can be held to it */
			pd_remember_head(f, ctx->head.start_seq, ctx->head_len, ctx->head_held,
					 pd_digest(ctx->head.buf, ctx->head_len, f->digest_key));
		}
		if (lost_boundary || ctx->proto != PD_PROTO_HTTP) {
			f->state = PD_FS_FINAL; /* nothing more to judge on this connection */
			return TC_ACT_OK;
		}
		f->requests++;
		f->last_ns = bpf_ktime_get_ns();
		/* only the first request's answer is known to start the server's stream */
		f->upgrade = ctx->upgrade && f->requests == 1 && ctx->reason == PD_R_NONE ? PD_UP_ASKED : PD_UP_NONE;
		__u32 head_end = ctx->head.start_seq + ctx->head_len;
		if (ctx->chunked) {
			f->state = PD_FS_CHUNKED;
			f->chunk_state = PD_CK_SIZE;
			f->chunk_left = 0;
			f->chunk_hi = 0;
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
			pd_tail_call(skb, ctx->gen, PD_STAGE_ENTRY);
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
	if (action == PD_ACT_HOLD) {
		/* Not judged yet (the daemon is verifying a token): drop the segment that
		 * completed the head. If the head began in earlier segments, those bytes are
		 * held again, so the resent segment completes the same head. */
		if (f && ctx->head_len && pd_seq_before(ctx->head.start_seq, ctx->seq)) {
			ctx->head.len = ctx->seq - ctx->head.start_seq;
			if (!f->accumulating && ctx->head.len <= PD_HEAD_MAX &&
			    bpf_map_update_elem(&pd_accum, &ctx->key, &ctx->head, BPF_ANY) == 0) {
				pd_partial_hold(&ctx->key, 0); /* held again, whatever the client's share */
				f->accumulating = 1;
			}
		}
		return TC_ACT_SHOT;
	}
	if (f) {
		f->state = PD_FS_FINAL;
		f->verdict = action;
		f->gen = ctx->gen;
		f->rule = ctx->rule;
	}
	/* One event per refusal: logged only here, once the decision is final (a head held
	 * back above is judged again when TCP resends it, and logged then). */
	int http = ctx->proto == PD_PROTO_HTTP && ctx->head_len;
	__u16 status = 0;
	if (http)
		status = action == PD_ACT_DENY ? 403 : action == PD_ACT_UNAUTH ? 401 : action == PD_ACT_REJECT ? 429 : 0;
	pd_log_ctx(ctx, action, status, decided_by);
	switch (action) {
	case PD_ACT_DROP:
		return TC_ACT_SHOT;
	case PD_ACT_DENY:
	case PD_ACT_UNAUTH:
	case PD_ACT_REJECT:
		return pd_reply_both(skb, ctx, http, action);
	default: /* reset, and anything this build does not know: refuse */
		return pd_reply_both(skb, ctx, 0, action);
	}
}
