/* pd_state.h: what only the BPF programs see — the per-CPU scratch context one packet's
 * stages share (pd_ctx, the value of pd_scratch). User space never reads or writes it (the
 * layouts it shares are in pd_abi.h), so it changes without PD_ABI_VERSION: a daemon keeps a
 * pinned pd_scratch only together with the programs of its own build. */
#ifndef PD_STATE_H
#define PD_STATE_H

#include "pd_abi.h"

/* Stamped by the entry program; a stage reached by tail call trusts no other context. */
#define PD_CTX_MAGIC 0x70644358u /* "pdCX" */
#define PD_CTX_VERSION 3

/* ---- the stages' work areas ------------------------------------------------------------
 * Stage-private working state, one at a time in ctx->work. Loop state kept there, in a map
 * value, is opaque to the verifier, so a bpf_loop state machine converges instead of being
 * explored value by value (which a state kept on the stack would be). Each stage sets up its
 * member before reading it: nothing in it outlives the stage. */
/* entry: the end-of-head search (pd_find_head_end) */
struct pd_scan_state {
	__u32 from;
	__u32 to;
	__u32 end; /* index after the final LF, 0 if not found */
	__u32 lead; /* only CR/LF so far: empty lines before the request line, skipped (RFC 9112 2.2) */
	__u32 first; /* find the end of the request line instead (the first LF after the lead) */
};

/* TCP options (pd_tcp_options, pd_segment.h); also the value of egress_work (egress.bpf.c:
 * the egress program has no context) */
struct pd_opt_walk {
	__u32 i;
	__u32 n;
	__u64 result;
	__u8 b[64];
};

/* http: the head parser */
struct pd_http {
	__u32 len;
	__u32 pos;
	__u8 st;
	__u8 reason;
	__u8 cur;        /* header being read (one H_* bit, or 0) */
	__u8 cand;       /* candidate names while reading a name */
	__u16 tok;       /* start of the current token */
	__u16 name_len;
	__u16 val_start;
	__u16 val_end;   /* after the last non-OWS value byte */
	__u16 vlen;      /* value bytes seen (for value matching) */
	__u8 te_match;   /* value still equals a prefix of "chunked" */
	__u8 cl_seen;
	__u8 cl_bad;
	__u8 cl_ows;     /* whitespace after the length's digits (trailing OWS, not part of the value) */
	__u8 hosts;
	__u32 cl;
	__u32 cl_cur;
	__u16 m_start, m_len, t_start, t_len;
};

/* http: the authority, normalized into ctx->host */
struct pd_hostnorm {
	__u32 off;
	__u32 n;
	__u32 out;
	__u8 in_v6;
	__u8 port;
	__u8 v6_done;
	__u8 reason;
};

/* path: the path, normalized into ctx->path */
struct pd_pathnorm {
	__u32 in;        /* next input index into head[] */
	__u32 in_end;
	__u32 out;       /* bytes in ctx->path */
	__u32 seg_start; /* output index where the current segment starts */
	__u32 depth;     /* completed segments on the stack */
	__u32 seg_len;
	__u8 all_dots;
	__u8 pct;        /* 0, or 1/2 inside a %XX escape */
	__u8 hi;
	__u8 reason;
	__u8 stop;
};

/* sni: a ClientHello's records, made one contiguous handshake */
struct pd_tls_compact {
	__u32 src;
	__u32 dst;
	__u32 rec_end; /* src offset where the current record ends */
	__u32 end;     /* bytes of records held */
	__u8 bad;
};

/* sni: the extension list */
struct pd_tls_exts {
	__u32 p;
	__u32 end;
	__u32 sni_off;
	__u32 sni_len;
	__u8 sni_seen;
	__u8 bad;       /* a pd_reason */
	__u8 done;
};

/* sni: server_name, normalized into ctx->host */
struct pd_sninorm {
	__u32 off;
	__u32 n;
	__u32 out;
	__u8 bad;
	__u8 digits;      /* the label being read is all digits so far */
	__u8 prev_digits; /* the label before it was */
};

union pd_work {
	struct pd_scan_state scan;
	__u8 cmp[64];               /* entry: segment bytes compared with held ones (pd_compare) */
	struct pd_opt_walk opt;
	struct pd_http http;
	struct pd_hostnorm hostnorm;
	struct pd_pathnorm pathnorm;
	struct pd_tls_compact compact;
	struct pd_tls_exts exts;
	struct pd_sninorm sninorm;
	char reply[128];            /* verdict: the 429, composed (the stages before are done) */
};

/* Members named one by one (ctx->action) and, together, as one block (ctx->pkt) that a
 * single memset clears: the kernel's struct_group(). */
#define PD_RESET_GROUP(NAME, ...)            \
	union {                              \
		struct { __VA_ARGS__ };      \
		struct { __VA_ARGS__ } NAME; \
	}

/* The per-CPU scratch context (pd_scratch) one packet's stages share. */
struct pd_ctx {
	__u32 magic;
	__u16 version;
	__u8 gen;          /* generation read once by the entry program */
	__u8 stage;        /* stage running now (pd_stage) */

	/* Carried from one head of a segment to the next (the verdict stage re-enters the entry
	 * program with them), so not part of the packet's state below. */
	__u8 pipelined;    /* heads judged in this segment before this one */
	__u8 reenter;      /* set by the verdict stage right before re-entering the entry */
	__u8 pad[6];

	/* This packet's state, zeroed as one block by pd_ctx_init (ctx->pkt) before it sets
	 * what comes from the packet and the configuration: a field added here starts every
	 * packet at zero, never with what the last packet on this CPU left in it. What follows
	 * the block is not reset (the buffers would cost too much per packet): a stage sets up
	 * its work area before it reads it, and the lengths in the block say what a buffer
	 * holds. */
	PD_RESET_GROUP(pkt,
		struct pd_flow_key key;
		__u32 ifindex;
		__u16 l3_off;      /* offset of the IP header in the frame */
		__u16 l4_off;      /* offset of the TCP header */
		__u16 payload_off; /* offset of the TCP payload */
		__u8 family;
		__u8 proto;        /* listener protocol */
		__u32 seq;         /* TCP seq / ack / flags of this segment (host order) */
		__u32 ack;
		__u32 payload_len;
		__u8 tcp_flags;
		__u8 action;       /* running verdict, pd_action */
		__u8 reason;       /* pd_reason if the fail mode applies */
		__u8 default_action;

		__u32 head_off;    /* offset of this head within the segment payload (for pipelining) */
		__u32 head_len;    /* bytes of the head (through the blank line) */
		__u32 max_head;

		/* HTTP head, filled by the parser */
		__u32 method;      /* pd_method bit */
		__u16 target_off;  /* request-target within head[] */
		__u16 target_len;
		__u16 host_off;    /* raw authority within head[] */
		__u16 host_len;
		__u16 auth_off;    /* Authorization value (JWT stage) */
		__u16 auth_len;
		__u32 body_len;    /* Content-Length */
		__u8 chunked;
		__u8 http_minor;
		__u8 has_host;
		__u8 fail_open;

		/* host and path stages */
		__u32 host_norm_len;
		__u32 path_len;
		__u32 host_id;     /* matched host, PD_RULE_NONE if none */
		__u32 rule;        /* matched route, PD_RULE_NONE if none */
		__u8 jwt;
		__u8 ratelimit;
		__u8 max_pipeline; /* from the generation's config */
		__u8 preflight;    /* a probe of a prepared generation: no replies, no counters */
		__u32 gen_tag;     /* pd_gen_tags[gen] when the packet entered */
		__u8 missing_sni;  /* from the generation's config */
		__u8 has_sni;      /* the ClientHello carried server_name */
		__u8 auth_count;   /* Authorization header lines */
		__u8 jwt_reason;   /* pd_jwt_reason of the JWT stage's decision */
		__u16 listener;    /* pd_listener.id (decision events) */
		__u8 from_stage;   /* the stage that made the last tail call (the verdict's: who decided) */
		__u8 pad_ev;
		__u64 jwt_require; /* claim bits of the matched route */
		__u64 jwt_sub;     /* pd_hash of the verified token's sub (0: none) — the rate limit's jwt_sub key */
		__u64 host_hash;   /* pd_hash of the whole normalized host (host stage) — the rate limit's host key */
		__u32 retry_after; /* rate limit: seconds until a token is there (the 429's Retry-After) */
		__u32 rl_index;    /* rate limit: the limit's index in the generation (counters) */
		__u64 hash_seed;
		__u8 head_held;    /* the head came in several segments: pd_accum keeps its bytes */
		__u8 seg_has_ts;   /* this segment carries a TCP timestamp (pd_discard_check) */
		__u8 upgrade;      /* the head carries an Upgrade header (WebSocket, h2c) */
		__u8 pad_held;
		__u32 seg_tsval;   /* its TSval */
	);
	union pd_work work; /* the running stage's (see above) */

	__u8 prefix_lens[PD_PATTERN_MAX / 8]; /* of the matched host (copied by the host stage) */
	__u8 host[PD_HOST_MAX];
	__u8 path[PD_PATH_MAX + PD_HEAD_SLACK];
	__u16 segs[PD_PATH_SEGS];
	/* The head bytes. Same layout as an accumulation entry, so an incomplete head is
	 * stored with one map update: head.start_seq = seq of buf[0], head.len = bytes held. */
	struct pd_accum head;
};

/* pd_ctx_init's zeroed block starts each of these at its "nothing yet" */
_Static_assert(PD_ACT_NONE == 0 && PD_R_NONE == 0 && PD_J_OK == 0 && PD_STAGE_ENTRY == 0 && PD_HELD_NONE == 0,
	       "zero is the start of the packet's state");
_Static_assert(sizeof(struct pd_ctx) <= 32768, "per-CPU values are limited to 32 KiB");

#endif /* PD_STATE_H */
