/* policyd/stage.h: the API of an operator's own stage (docs/stages.md).
 *
 * An own stage is one BPF program (SEC("tc")) that policyd puts into its chain where the
 * policy says (`stages: - {name: geo, object: /usr/lib/policyd/stages/geo.bpf.o, after: host}`).
 * It runs, by tail call, on the packet that completes a request head (HTTP) or a ClientHello
 * (TLS), after the stage it follows, and it does one of three things:
 *
 *   return pd_stage_pass(skb, ctx);                 the next stage judges (the usual case)
 *   return pd_stage_refuse(skb, ctx, PD_ACT_DENY);  refuse: DENY (HTTP 403 / TLS reset),
 *                                                   DROP or RESET; the verdict stage answers
 *   return pd_stage_fail(skb, ctx);                 cannot judge: the policy's fail mode
 *
 * What it may read, through the functions below (nothing else in the context is part of the
 * API): the listener's protocol, the client's address, and for HTTP the method, the
 * normalized host and path (once the host and path stages ran) and the request head's
 * header lines. It must not write the context, except through these functions.
 *
 * A stage is built against the headers of the policyd it runs in (clang -target bpf
 * -I/usr/include/policyd ...): the daemon refuses an object built against another layout of
 * the context, and the stage refuses (fail mode) a context it does not know, which preflight
 * sees before the stage goes live. Preflight's probes come from 0.0.0.1 and carry no headers
 * of their own: a stage must pass them (a stage that refuses what the policy allows is refused
 * at apply).
 *
 *   #include <policyd/stage.h>
 *
 *   SEC("tc")
 *   int canary(struct __sk_buff *skb)
 *   {
 *           struct pd_ctx *ctx = pd_stage_begin();
 *           if (!ctx)
 *                   return TC_ACT_SHOT;  // no context: the chain was not entered properly
 *           ...
 *           return pd_stage_pass(skb, ctx);
 *   }
 *
 * (the license section comes with the header: the programs use GPL-only helpers.)
 */
#ifndef POLICYD_STAGE_H
#define POLICYD_STAGE_H

#include "../pd_common.h"

/* The version of this API; a stage may check it at build time. */
#define PD_STAGE_API_VERSION 1

/* The context of the packet being judged, or 0 if this program was not reached through
 * policyd's chain (or was built against another layout of the context). */
PD_INLINE struct pd_ctx *pd_stage_begin(void)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (ctx)
		pd_count_ctx(ctx, PD_C_STAGE_BASE + (ctx->stage & (PD_STAGE_MAX - 1)));
	return ctx;
}

/* ---- what a stage may read ------------------------------------------------------------ */

PD_INLINE int pd_stage_is_http(const struct pd_ctx *ctx) { return ctx->proto == PD_PROTO_HTTP; }
PD_INLINE int pd_stage_is_tls(const struct pd_ctx *ctx) { return ctx->proto == PD_PROTO_TLS; }

/* The client's address: 4 (IPv4, in addr[0], network order) or 6 (addr[0..3]). */
PD_INLINE __u8 pd_stage_client(const struct pd_ctx *ctx, __u32 addr[4])
{
	addr[0] = ctx->key.saddr[0];
	addr[1] = ctx->key.saddr[1];
	addr[2] = ctx->key.saddr[2];
	addr[3] = ctx->key.saddr[3];
	return ctx->key.family;
}

/* HTTP: the method (a PD_M_* bit). */
PD_INLINE __u32 pd_stage_method(const struct pd_ctx *ctx) { return ctx->method; }

/* HTTP: the normalized host (lower case, no port, no trailing dot) once the host stage ran;
 * its length (0: not known yet), the bytes in ctx->host. */
PD_INLINE __u32 pd_stage_host_len(const struct pd_ctx *ctx) { return ctx->host_norm_len; }

/* HTTP: the normalized path (decoded, dot segments resolved) once the path stage ran; its
 * length (0: not known yet), the bytes in ctx->path. */
PD_INLINE __u32 pd_stage_path_len(const struct pd_ctx *ctx) { return ctx->path_len; }

/* HTTP: finds a header line of the request head by name (`name`, `len` bytes, lower case;
 * matched case-insensitively, at most PD_STAGE_NAME_MAX bytes). Returns 1 and the value's
 * offset and length within the head (pd_stage_byte reads it; leading spaces skipped, the line's end not
 * included), or 0 if the head has no such header. Only the first such line is found. */
#define PD_STAGE_NAME_MAX 32

/* Byte i of the head (i < ctx->head_len). The index is masked where the verifier sees it:
 * the barrier keeps the compiler from dropping the mask on an index it knows is in range. */
PD_INLINE __u8 pd_stage_byte(const struct pd_ctx *ctx, __u32 i)
{
	asm volatile("" : "+r"(i));
	return ctx->head.buf[i & (PD_HEAD_MAX - 1)];
}

struct pd_stage_find {
	const struct pd_ctx *ctx;
	char name[PD_STAGE_NAME_MAX];
	__u32 len;
	__u32 end;   /* head bytes */
	__u32 found; /* offset of the value + 1 */
};

static long pd_stage_find_cb(__u32 i, struct pd_stage_find *f)
{
	/* a header line starts after "\n"; compare `len` bytes, then ':' */
	if (i == 0 || i + f->len + 1 > f->end || i >= PD_HEAD_MAX)
		return i >= f->end ? 1 : 0;
	if (pd_stage_byte(f->ctx, i - 1) != '\n')
		return 0;
	for (__u32 k = 0; k < PD_STAGE_NAME_MAX; ++k) {
		if (k >= f->len)
			break;
		__u8 c = pd_stage_byte(f->ctx, i + k);
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != (__u8)f->name[k])
			return 0;
	}
	if (pd_stage_byte(f->ctx, i + f->len) != ':')
		return 0;
	f->found = i + f->len + 2;
	return 1;
}

/* The value's extent: leading blanks skipped, up to the line's end. */
struct pd_stage_value {
	const struct pd_ctx *ctx;
	__u32 at, stop, end;
	__u8 started;
};

static long pd_stage_value_cb(__u32 i, struct pd_stage_value *v)
{
	__u32 pos = v->stop;
	if (pos >= v->end)
		return 1;
	__u8 c = pd_stage_byte(v->ctx, pos);
	if (!v->started) {
		if (c == ' ' || c == '\t') {
			v->at = v->stop = pos + 1;
			return 0;
		}
		v->started = 1;
	}
	if (c == '\r' || c == '\n')
		return 1;
	v->stop = pos + 1;
	return 0;
}

PD_INLINE int pd_stage_header(const struct pd_ctx *ctx, const char *name, __u32 len, __u32 *off, __u32 *vlen)
{
	struct pd_stage_find f = {.ctx = ctx, .len = len, .end = ctx->head_len, .found = 0};
	if (len == 0 || len > PD_STAGE_NAME_MAX || f.end > PD_HEAD_MAX)
		return 0;
	for (__u32 k = 0; k < PD_STAGE_NAME_MAX; ++k) {
		if (k >= len)
			break;
		f.name[k] = name[k];
	}
	bpf_loop(PD_HEAD_MAX, pd_stage_find_cb, &f, 0);
	if (!f.found)
		return 0;
	struct pd_stage_value v = {.ctx = ctx, .at = f.found - 1, .stop = f.found - 1, .end = f.end, .started = 0};
	bpf_loop(PD_HEAD_MAX, pd_stage_value_cb, &v, 0);
	if (v.stop < v.at)
		return 0;
	*off = v.at;
	*vlen = v.stop - v.at;
	return 1;
}

/* ---- what a stage may do ---------------------------------------------------------------- */

/* The next stage of the chain judges. */
PD_INLINE int pd_stage_pass(struct __sk_buff *skb, struct pd_ctx *ctx) { return pd_chain_next(skb, ctx); }

/* Refuse: PD_ACT_DENY, PD_ACT_DROP or PD_ACT_RESET (anything else is DENY). */
PD_INLINE int pd_stage_refuse(struct __sk_buff *skb, struct pd_ctx *ctx, __u8 action)
{
	if (action != PD_ACT_DROP && action != PD_ACT_RESET)
		action = PD_ACT_DENY;
	ctx->action = action;
	return pd_tail(skb, ctx, PD_STAGE_VERDICT);
}

/* The stage cannot judge this request: the policy's fail mode decides (counted as
 * own_stage_failed). */
PD_INLINE int pd_stage_fail(struct __sk_buff *skb, struct pd_ctx *ctx)
{
	pd_fail(ctx, PD_R_OWN_STAGE);
	return pd_tail(skb, ctx, PD_STAGE_VERDICT);
}

#endif /* POLICYD_STAGE_H */
