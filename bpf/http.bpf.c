/* http.bpf.c: the HTTP/1.x head parser. One pass over the head bytes records the method,
 * request-target, the single Host (or the absolute-form authority), Content-Length,
 * Transfer-Encoding and Authorization, and normalizes the authority into ctx->host.
 * Also walks chunked-body framing so the next request on the connection is found. */
#include "pd_common.h"
#include "pd_parse.h"
#include "pd_segment.h"

enum {
	S_LEAD = 0,   /* empty lines before the request line */
	S_METHOD,
	S_TARGET,
	S_VERSION,
	S_RL_CR,      /* CR seen at the end of the request line */
	S_LINE,       /* start of a header line (or of the final empty line) */
	S_NAME,
	S_OWS,        /* after ':' */
	S_VALUE,
	S_HDR_CR,     /* CR at the end of a header line */
	S_END_CR,     /* CR of the final empty line */
	S_DONE,
};

enum { H_HOST = 1, H_CL = 2, H_TE = 4, H_AUTH = 8, H_UPG = 16, H_ALL = 31 };

const volatile char n_host[] = "host";
const volatile char n_cl[] = "content-length";
const volatile char n_te[] = "transfer-encoding";
const volatile char n_auth[] = "authorization";
const volatile char n_upg[] = "upgrade";
const volatile char v_chunked[] = "chunked";
const volatile char v_version[] = "HTTP/1.";

PD_INLINE char name_at(__u8 cand, __u32 k)
{
	switch (cand) {
	case H_HOST:
		return k < sizeof(n_host) - 1 ? n_host[k] : 0;
	case H_CL:
		return k < sizeof(n_cl) - 1 ? n_cl[k] : 0;
	case H_TE:
		return k < sizeof(n_te) - 1 ? n_te[k] : 0;
	case H_AUTH:
		return k < sizeof(n_auth) - 1 ? n_auth[k] : 0;
	case H_UPG:
		return k < sizeof(n_upg) - 1 ? n_upg[k] : 0;
	}
	return 0;
}

PD_INLINE __u32 name_len_of(__u8 cand)
{
	switch (cand) {
	case H_HOST:
		return sizeof(n_host) - 1;
	case H_CL:
		return sizeof(n_cl) - 1;
	case H_TE:
		return sizeof(n_te) - 1;
	case H_AUTH:
		return sizeof(n_auth) - 1;
	case H_UPG:
		return sizeof(n_upg) - 1;
	}
	return 0;
}

PD_INLINE __u8 narrow(__u8 cand, __u32 k, __u8 c)
{
	__u8 out = 0;
	if ((cand & H_HOST) && name_at(H_HOST, k) == c)
		out |= H_HOST;
	if ((cand & H_CL) && name_at(H_CL, k) == c)
		out |= H_CL;
	if ((cand & H_TE) && name_at(H_TE, k) == c)
		out |= H_TE;
	if ((cand & H_AUTH) && name_at(H_AUTH, k) == c)
		out |= H_AUTH;
	if ((cand & H_UPG) && name_at(H_UPG, k) == c)
		out |= H_UPG;
	return out;
}

PD_INLINE void end_header(struct pd_ctx *ctx, struct pd_http *h)
{
	switch (h->cur) {
	case H_HOST:
		h->hosts++;
		ctx->host_off = h->val_start;
		ctx->host_len = h->val_end > h->val_start ? h->val_end - h->val_start : 0;
		break;
	case H_CL:
		if (h->vlen == 0 || h->cl_bad || (h->cl_seen && h->cl_cur != h->cl))
			h->reason = PD_R_BAD_BODY;
		h->cl = h->cl_cur;
		h->cl_seen = 1;
		break;
	case H_TE:
		if (!h->te_match || h->val_end - h->val_start != sizeof(v_chunked) - 1)
			h->reason = PD_R_SMUGGLING; /* only a lone "chunked" is framed by us */
		else
			ctx->chunked = 1;
		break;
	case H_AUTH:
		if (ctx->auth_count < 255)
			ctx->auth_count++;
		ctx->auth_off = h->val_start;
		ctx->auth_len = h->val_end > h->val_start ? h->val_end - h->val_start : 0;
		break;
	case H_UPG:
		if (h->val_end > h->val_start)
			ctx->upgrade = 1;
		break;
	}
}

struct pd_cb {
	struct pd_ctx *ctx;
};

static long http_cb(__u32 i, struct pd_cb *cb)
{
	struct pd_ctx *ctx = cb->ctx;
	struct pd_http *h = &ctx->work.http;
	__u32 pos = h->pos;
	if (pos >= h->len || h->st == S_DONE || h->reason)
		return 1;
	/* Fast forward 8 bytes where none of them needs a look: target bytes that are all
	 * VCHAR, or value bytes of a header we do not read that are all printable. */
	if (pos + 8 <= h->len && (h->st == S_TARGET || (h->st == S_VALUE && h->cur == 0))) {
		__u64 w = *(__u64 *)(ctx->head.buf + PD_HEAD_IDX(pos));
		if (!pd_has_less(w, 0x21) && !(w & PD_HIGHS) && !pd_has_byte(w, 0x7f)) {
			h->pos = pos + 8;
			if (h->st == S_VALUE)
				h->val_end = pos + 8;
			return 0;
		}
	}
	h->pos = pos + 1;
	__u8 c = ctx->head.buf[PD_HEAD_IDX(pos)];

	switch (h->st) {
	case S_LEAD:
		if (c == '\r' || c == '\n')
			return 0;
		h->st = S_METHOD;
		h->m_start = pos;
		/* fall through */
	case S_METHOD:
		if (c == ' ') {
			h->m_len = pos - h->m_start;
			h->st = S_TARGET;
			h->t_start = pos + 1;
			return 0;
		}
		if (!pd_is_tchar(c) || pos - h->m_start >= 16)
			h->reason = PD_R_BAD_REQUEST_LINE;
		return 0;
	case S_TARGET:
		if (c == ' ') {
			h->t_len = pos - h->t_start;
			if (h->t_len == 0)
				h->reason = PD_R_BAD_REQUEST_LINE;
			h->st = S_VERSION;
			h->tok = pos + 1;
			return 0;
		}
		if (c <= 0x20 || c >= 0x7f)
			h->reason = PD_R_BAD_REQUEST_LINE;
		return 0;
	case S_VERSION: {
		__u32 k = pos - h->tok;
		if (c == '\r' || c == '\n') {
			if (k != sizeof(v_version))
				h->reason = PD_R_BAD_REQUEST_LINE;
			h->st = c == '\r' ? S_RL_CR : S_LINE;
			return 0;
		}
		if (k < sizeof(v_version) - 1) {
			if (c != v_version[k])
				h->reason = PD_R_BAD_REQUEST_LINE;
		} else if (k == sizeof(v_version) - 1) {
			if (c != '0' && c != '1')
				h->reason = PD_R_BAD_REQUEST_LINE;
			ctx->http_minor = c - '0';
		} else {
			h->reason = PD_R_BAD_REQUEST_LINE;
		}
		return 0;
	}
	case S_RL_CR:
	case S_HDR_CR:
		if (c != '\n') {
			h->reason = h->st == S_RL_CR ? PD_R_BAD_REQUEST_LINE : PD_R_BAD_HEADER;
			return 0;
		}
		if (h->st == S_HDR_CR)
			end_header(ctx, h);
		h->st = S_LINE;
		return 0;
	case S_LINE:
		if (c == '\r') {
			h->st = S_END_CR;
			return 0;
		}
		if (c == '\n') {
			h->st = S_DONE;
			return 1;
		}
		if (c == ' ' || c == '\t' || !pd_is_tchar(c)) {
			h->reason = PD_R_BAD_HEADER; /* obs-fold or a bad name */
			return 0;
		}
		h->st = S_NAME;
		h->tok = pos;
		h->cand = H_ALL;
		/* fall through */
	case S_NAME: {
		if (c == ':') {
			h->name_len = pos - h->tok;
			h->cur = 0;
			if (h->cand && name_len_of(h->cand & -h->cand) == h->name_len)
				h->cur = h->cand & -h->cand;
			h->st = S_OWS;
			h->val_start = h->val_end = pos + 1;
			h->vlen = 0;
			h->te_match = 1;
			h->cl_cur = 0;
			h->cl_bad = 0;
			h->cl_ows = 0;
			return 0;
		}
		if (!pd_is_tchar(c)) {
			h->reason = PD_R_BAD_HEADER; /* includes whitespace before the colon */
			return 0;
		}
		__u32 k = pos - h->tok;
		if (h->cand)
			h->cand = k < 32 ? narrow(h->cand, k, pd_lower(c)) : 0;
		return 0;
	}
	case S_OWS:
		if (c == ' ' || c == '\t') {
			h->val_start = h->val_end = pos + 1;
			return 0;
		}
		h->st = S_VALUE;
		/* fall through */
	case S_VALUE:
		if (c == '\r' || c == '\n') {
			if (c == '\n') {
				end_header(ctx, h);
				h->st = S_LINE;
			} else {
				h->st = S_HDR_CR;
			}
			return 0;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			h->reason = PD_R_BAD_HEADER; /* NUL or another control byte */
			return 0;
		}
		if (c != ' ' && c != '\t')
			h->val_end = pos + 1;
		if (h->cur == H_CL) {
			if (pd_is_digit(c) && !h->cl_ows) {
				if (h->cl_cur > 100000000u)
					h->cl_bad = 1;
				h->cl_cur = h->cl_cur * 10 + (c - '0');
			} else if (c == ' ' || c == '\t') {
				h->cl_ows = 1; /* trailing whitespace is not part of the value (nginx trims it) */
			} else {
				h->cl_bad = 1; /* lists, signs, inner spaces: not a plain length */
			}
		} else if (h->cur == H_TE) {
			__u32 k = pos - h->val_start;
			if (k >= sizeof(v_chunked) - 1 || pd_lower(c) != v_chunked[k & 7])
				h->te_match = 0;
		}
		h->vlen++;
		return 0;
	case S_END_CR:
		if (c != '\n')
			h->reason = PD_R_BAD_HEADER;
		h->st = S_DONE;
		return 1;
	}
	return 1;
}

PD_INLINE __u32 method_bit(struct pd_ctx *ctx, __u32 start, __u32 len)
{
	__u64 w = 0;
	if (len == 0 || len > 7)
		return PD_M_OTHER;
	for (__u32 k = 0; k < 7; k++) {
		if (k >= len)
			break;
		w |= (__u64)ctx->head.buf[PD_HEAD_IDX(start + k)] << (8 * k);
	}
#define M(s) ((__u64)(s)[0] | (__u64)(s)[1] << 8 | (sizeof(s) > 3 ? (__u64)(s)[2] << 16 : 0) | \
	      (sizeof(s) > 4 ? (__u64)(s)[3] << 24 : 0) | (sizeof(s) > 5 ? (__u64)(s)[4] << 32 : 0) | \
	      (sizeof(s) > 6 ? (__u64)(s)[5] << 40 : 0) | (sizeof(s) > 7 ? (__u64)(s)[6] << 48 : 0))
	if (w == M("GET")) return PD_M_GET;
	if (w == M("HEAD")) return PD_M_HEAD;
	if (w == M("POST")) return PD_M_POST;
	if (w == M("PUT")) return PD_M_PUT;
	if (w == M("DELETE")) return PD_M_DELETE;
	if (w == M("CONNECT")) return PD_M_CONNECT;
	if (w == M("OPTIONS")) return PD_M_OPTIONS;
	if (w == M("TRACE")) return PD_M_TRACE;
	if (w == M("PATCH")) return PD_M_PATCH;
#undef M
	return PD_M_OTHER;
}

/* Absolute-form "http://authority/path": the authority replaces Host for matching. */
PD_INLINE void absolute_form(struct pd_ctx *ctx)
{
	__u32 t = ctx->target_off, n = ctx->target_len;
	__u32 skip;
	__u8 *b = ctx->head.buf;
	if (n < 8 || b[PD_HEAD_IDX(t)] == '/')
		return;
	if ((b[PD_HEAD_IDX(t)] | 32) == 'h' && (b[PD_HEAD_IDX(t + 1)] | 32) == 't' &&
	    (b[PD_HEAD_IDX(t + 2)] | 32) == 't' && (b[PD_HEAD_IDX(t + 3)] | 32) == 'p') {
		if (b[PD_HEAD_IDX(t + 4)] == ':' && b[PD_HEAD_IDX(t + 5)] == '/' && b[PD_HEAD_IDX(t + 6)] == '/')
			skip = 7;
		else if ((b[PD_HEAD_IDX(t + 4)] | 32) == 's' && b[PD_HEAD_IDX(t + 5)] == ':' &&
			 b[PD_HEAD_IDX(t + 6)] == '/' && b[PD_HEAD_IDX(t + 7)] == '/')
			skip = 8;
		else
			return;
	} else {
		return;
	}
	__u32 a = 0;
	for (; a < PD_HOST_MAX; a++) {
		if (skip + a >= n)
			break;
		__u8 c = b[PD_HEAD_IDX(t + skip + a)];
		if (c == '/' || c == '?' || c == '#')
			break;
	}
	ctx->host_off = t + skip;
	ctx->host_len = a;
	ctx->has_host = 1;
	ctx->target_off = t + skip + a;
	ctx->target_len = n - skip - a; /* 0: empty path, matched as "/" */
}

/* Authority -> ctx->host: lower-cased, port and one trailing dot removed. */
static long hostnorm_cb(__u32 k, struct pd_cb *cb)
{
	struct pd_ctx *ctx = cb->ctx;
	struct pd_hostnorm *s = &ctx->work.hostnorm;
	if (k >= s->n || s->reason)
		return 1;
	__u8 c = pd_lower(ctx->head.buf[PD_HEAD_IDX(s->off + k)]);
	if (s->port) {
		if (!pd_is_digit(c))
			s->reason = PD_R_BAD_HOST;
		return 0;
	}
	if (k == 0 && c == '[') {
		s->in_v6 = 1;
	} else if (s->in_v6 && !s->v6_done) {
		if (c == ']')
			s->v6_done = 1;
		else if (!pd_is_digit(c) && !(c >= 'a' && c <= 'f') && c != ':' && c != '.')
			s->reason = PD_R_BAD_HOST;
	} else if (c == ':') {
		s->port = 1;
		return 0;
	} else if (s->v6_done) {
		s->reason = PD_R_BAD_HOST;
	} else if (!pd_is_name_char(c)) {
		s->reason = PD_R_BAD_HOST;
	}
	if (s->reason)
		return 1;
	ctx->host[PD_HOST_IDX(s->out)] = c;
	s->out++;
	return 0;
}

PD_INLINE __u8 normalize_host(struct pd_ctx *ctx)
{
	struct pd_hostnorm *s = &ctx->work.hostnorm;
	if (ctx->host_len == 0)
		return PD_R_NO_HOST;
	if (ctx->host_len >= PD_HOST_MAX)
		return PD_R_BAD_HOST;
	__builtin_memset(s, 0, sizeof(*s));
	s->off = ctx->host_off;
	s->n = ctx->host_len;
	struct pd_cb cb = { .ctx = ctx };
	bpf_loop(PD_HOST_MAX, hostnorm_cb, &cb, 0);
	if (s->reason)
		return s->reason;
	if (s->in_v6 && !s->v6_done)
		return PD_R_BAD_HOST;
	__u32 out = s->out;
	if (out > 0 && ctx->host[PD_HOST_IDX(out - 1)] == '.')
		out--;
	if (out == 0 || out >= PD_HOST_MAX)
		return PD_R_BAD_HOST;
	ctx->host_norm_len = out;
	return PD_R_NONE;
}

/* ---- chunked body framing -------------------------------------------------------------
 * Walks the framing bytes of this segment from flow->next_seq: chunk data is skipped by
 * arithmetic, size lines and trailers are read byte by byte, as many as the segment holds
 * (the state lives in the flow entry, so a line may run across segments). When the body ends
 * the flow goes back to FS_HEAD and the next head (if it starts in this segment) is judged.
 * What nginx accepts is accepted: sizes up to 2^63 with any number of leading zeros, any
 * bytes in extensions and trailers. Where nginx is stricter (a CR not followed by LF), the
 * walker lets it through and nginx refuses the body; where the walker is stricter (bytes
 * between chunk data and its CRLF, which older nginx skips), the connection is reset. */
#define PD_CHUNK_SKIP (1u << 30) /* chunk data skipped at once: sequence numbers stay comparable */

struct pd_walk {
	struct __sk_buff *skb;
	struct pd_flow *f;
	__u32 off;     /* skb offset of the next byte */
	__u32 end;     /* skb offset after the payload */
	__u8 bad;
	__u8 done;     /* body ended */
};

static long walk_cb(__u32 i, struct pd_walk *w)
{
	struct pd_flow *f = w->f;
	if (w->off >= w->end || w->done || w->bad)
		return 1;
	__u64 size = ((__u64)f->chunk_hi << 32) | f->chunk_left;
	if (f->chunk_state == PD_CK_DATA) {
		/* skip the data by arithmetic; it may run past this segment (a huge chunk in
		 * steps of PD_CHUNK_SKIP: the segment where one ends walks the next) */
		__u64 skip = size > PD_CHUNK_SKIP ? PD_CHUNK_SKIP : size;
		w->off += (__u32)skip;
		size -= skip;
		f->chunk_left = (__u32)size;
		f->chunk_hi = (__u32)(size >> 32);
		if (!size)
			f->chunk_state = PD_CK_DATA_CR;
		return 0;
	}
	__u8 c;
	if (bpf_skb_load_bytes(w->skb, w->off, &c, 1) < 0) {
		w->bad = 1;
		return 1;
	}
	w->off++;
	switch (f->chunk_state) {
	case PD_CK_SIZE:
	case PD_CK_SIZE_MORE: {
		int v = pd_hexval(c);
		if (v >= 0) {
			if (size > 0x7fffffffffffffffULL / 16) { /* nginx: NGX_MAX_OFF_T_VALUE / 16 */
				w->bad = 1;
				return 1;
			}
			size = size * 16 + v;
			f->chunk_left = (__u32)size;
			f->chunk_hi = (__u32)(size >> 32);
			f->chunk_state = PD_CK_SIZE_MORE;
		} else if (f->chunk_state == PD_CK_SIZE_MORE && (c == ';' || c == ' ' || c == '\t' || c == '\r')) {
			f->chunk_state = PD_CK_EXT;
		} else if (f->chunk_state == PD_CK_SIZE_MORE && c == '\n') {
			goto size_line_done;
		} else {
			w->bad = 1;
		}
		return 0;
	}
	case PD_CK_EXT:
		/* an extension: any bytes up to the line's end */
		if (c == '\n')
			goto size_line_done;
		return 0;
	case PD_CK_DATA_CR:
		if (c == '\r') {
			f->chunk_state = PD_CK_DATA_LF;
			return 0;
		}
		/* fall through: a bare LF ends the data line too */
	case PD_CK_DATA_LF:
		if (c != '\n') {
			w->bad = 1;
			return 0;
		}
		f->chunk_state = PD_CK_SIZE;
		f->chunk_left = 0;
		f->chunk_hi = 0;
		return 0;
	case PD_CK_TRAILER:
		/* at the start of a trailer line: an empty line ends the body */
		if (c == '\r')
			return 0;
		if (c == '\n') {
			w->done = 1;
			return 1;
		}
		f->chunk_state = PD_CK_TRAILER_LINE;
		return 0;
	case PD_CK_TRAILER_LINE:
		/* a trailer field: any bytes up to the line's end */
		if (c == '\n')
			f->chunk_state = PD_CK_TRAILER;
		return 0;
	}
	w->bad = 1;
	return 1;

size_line_done:
	f->chunk_state = size == 0 ? PD_CK_TRAILER : PD_CK_DATA;
	return 0;
}

PD_INLINE int walk_chunks(struct __sk_buff *skb, struct pd_ctx *ctx)
{
	struct pd_flow *f = bpf_map_lookup_elem(&pd_flows, &ctx->key);
	if (!f)
		return pd_fail_inline(ctx, PD_R_NO_FLOW);
	__u32 seg_end = ctx->seq + ctx->payload_len;
	if (pd_seq_before_eq(seg_end, f->next_seq))
		return TC_ACT_OK; /* framing already walked (retransmission) */
	if (pd_seq_before(f->next_seq, ctx->seq)) {
		pd_count(PD_C_REASON_BASE + PD_R_OUT_OF_ORDER);
		return TC_ACT_SHOT;
	}
	struct pd_walk w = {
		.skb = skb, .f = f,
		.off = ctx->payload_off + (f->next_seq - ctx->seq),
		.end = ctx->payload_off + ctx->payload_len,
	};
	__u32 start = w.off;
	/* a step reads a byte or skips chunk data (at most one skip per byte read, and a last
	 * one): every framing byte of the segment is read, however many */
	__u32 steps = w.off < w.end ? 2 * (w.end - w.off) + 2 : 2;
	bpf_loop(steps > (1u << 18) ? (1u << 18) : steps, walk_cb, &w, 0);
	if (w.bad || (!w.done && w.off < w.end)) {
		f->state = PD_FS_FINAL;
		f->verdict = PD_ACT_RESET;
		pd_fail(ctx, PD_R_BAD_BODY);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}
	if (f->srv == PD_SRV_SEEN) {
		/* The framing read here decides where the next request starts: a copy of these
		 * bytes the server takes instead (it may drop this one for reasons the gateway
		 * cannot see) must be the same bytes. Kept until the server acknowledges them. */
		__u32 to = w.off < w.end ? w.off : w.end;
		__u32 n = to - start, from = ctx->seq + (start - ctx->payload_off);
		if (n > 0 && n <= PD_HEAD_MAX && pd_copy_in(skb, start, ctx->head.buf, 0, n) == 0)
			pd_remember_framing(f, from, n, pd_digest(ctx->head.buf, n, f->digest_key));
		else if (n > 0) {
			pd_mark_unchecked(f, from + n); /* too long to keep: copies cannot be checked */
			pd_check_bounds(f, from + n);
		}
	}
	f->next_seq = ctx->seq + (w.off - ctx->payload_off);
	if (!w.done)
		return TC_ACT_OK;
	f->state = PD_FS_HEAD;
	if (w.off < w.end) /* the next head starts in this segment: judge it from the top */
		return pd_tail(skb, ctx, PD_STAGE_ENTRY);
	return TC_ACT_OK;
}

SEC("tc")
int pd_http(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	if (ctx->head_len == 0) /* the entry found no head: it sent us a chunked-body segment */
		return walk_chunks(skb, ctx);
	pd_stage_enter(ctx, PD_STAGE_HTTP);

	struct pd_http *hp = &ctx->work.http;
	__builtin_memset(hp, 0, sizeof(*hp));
	hp->len = ctx->head_len > PD_HEAD_MAX ? PD_HEAD_MAX : ctx->head_len;
	struct pd_cb cb = { .ctx = ctx };
	bpf_loop(PD_HEAD_MAX, http_cb, &cb, 0);
	struct pd_http h;
	__builtin_memcpy(&h, hp, sizeof(h));

	if (!h.reason && h.st != S_DONE)
		h.reason = PD_R_BAD_HEADER;
	if (!h.reason && h.hosts > 1)
		h.reason = PD_R_MULTI_HOST;
	if (!h.reason && h.cl_seen && ctx->chunked)
		h.reason = PD_R_SMUGGLING;
	if (h.reason) {
		pd_fail(ctx, h.reason);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}
	ctx->method = method_bit(ctx, h.m_start, h.m_len);
	ctx->target_off = h.t_start;
	ctx->target_len = h.t_len;
	ctx->body_len = h.cl_seen ? h.cl : 0;
	ctx->has_host = h.hosts == 1;
	absolute_form(ctx);
	if (!ctx->has_host) {
		pd_fail(ctx, PD_R_NO_HOST);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}
	__u8 r = normalize_host(ctx);
	if (r) {
		pd_fail(ctx, r);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}
	pd_count_ctx(ctx, PD_C_REQUESTS);
	return pd_chain_next(skb, ctx);
}
