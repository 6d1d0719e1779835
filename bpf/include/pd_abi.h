/* pd_abi.h: everything the BPF programs and the C++ controller share — stage indices,
 * actions, fail-mode reasons, counter indices, limits, and every map key/value layout user
 * space reads or writes (or keeps across builds: pd_flows, pd_syn, pd_accum). One
 * definition, included by both sides; C++ static_asserts the sizes. What only the programs
 * see (the per-CPU context and the stages' working areas) is in pd_state.h, which user space
 * does not include. */
#ifndef PD_ABI_H
#define PD_ABI_H

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_spin_lock */

/* Layout version of the shared maps (flows, tables, counters). A daemon keeps a pinned flow
 * table across an upgrade only when this matches. */
#define PD_ABI_VERSION 8 /* 3: decision events (pd_log, pd_log_budget, pd_runtime.log_*);
			  * 4: judged-head digests and TCP timestamps in pd_flow, quic in pd_listener;
			  * 5: the server's side (pd_egress) and earlier judged heads in pd_flow;
			  * 6: handshakes in pd_syn until they complete, upgrades in pd_flow;
			  * 7: the client's address in pd_event_jwt; the server's SYN-ACK in pd_syn;
			  *    pd_rl_counts and pd_rl_limit.max_buckets;
			  * 8: 16 stage slots a generation (own stages from 8), so the PROG_ARRAY,
			  *    pd_chain and the per-stage counters grew */

/* ---- stages: PROG_ARRAY slot = pd_slot(gen, stage) = gen * PD_STAGE_MAX + stage ------- */
enum pd_stage {
	PD_STAGE_ENTRY = 0,     /* the attached program; also re-entered for pipelined heads */
	PD_STAGE_HTTP = 1,      /* HTTP head parser (fixed, runs before the chain for HTTP) */
	PD_STAGE_SNI = 2,
	PD_STAGE_HOST = 3,
	PD_STAGE_PATH = 4,
	PD_STAGE_JWT = 5,
	PD_STAGE_RATELIMIT = 6,
	PD_STAGE_VERDICT = 7,
	PD_STAGE_OWN = 8,       /* operators' own stages (bpf/include/policyd/stage.h) take 8.. */
	PD_STAGE_MAX = 16,
};
#define PD_GENERATIONS 2
#define PD_PROG_SLOTS (PD_GENERATIONS * PD_STAGE_MAX)
#define PD_STAGE_NONE 0xff

/* The PROG_ARRAY slot of a stage in a generation, and its pd_chain index: the controller
 * fills the slots and the programs' one tail call (pd_tail_call) reads them with this one
 * function, so the two can never disagree. */
static inline __attribute__((always_inline)) __u32 pd_slot(__u32 gen, __u32 stage)
{
	return (gen & 1) * PD_STAGE_MAX + (stage & (PD_STAGE_MAX - 1));
}

/* ---- actions (route/rule actions and the final verdict) ----------------------------- */
enum pd_action {
	PD_ACT_NONE = 0,   /* not decided yet */
	PD_ACT_ALLOW = 1,
	PD_ACT_DENY = 2,   /* HTTP: 403 to the client + RST to the server; TLS: RST both ways */
	PD_ACT_DROP = 3,   /* silent */
	PD_ACT_RESET = 4,  /* RST both ways */
	PD_ACT_REJECT = 5, /* rate limit: HTTP 429 */
	PD_ACT_UNAUTH = 6, /* JWT: HTTP 401 */
	PD_ACT_HOLD = 7,   /* not judged yet (a token the daemon verifies): drop this segment, TCP resends it */
	PD_ACT_MAX = 8,
};

/* ---- fail-mode reasons: anything the dataplane cannot judge with certainty ------------ */
enum pd_reason {
	PD_R_NONE = 0,
	PD_R_HEAD_TOO_LARGE = 1,     /* request head over limits.max_head_bytes */
	PD_R_BAD_REQUEST_LINE = 2,   /* malformed request line */
	PD_R_BAD_HEADER = 3,         /* malformed header line (incl. obs-fold, space before colon) */
	PD_R_NO_HOST = 4,            /* no authority in the request */
	PD_R_MULTI_HOST = 5,         /* more than one Host header */
	PD_R_BAD_HOST = 6,           /* authority that is not a host name / IP literal */
	PD_R_BAD_PATH = 7,           /* encoded '/', '\\', NUL, bad %-escape, '#', not origin-form */
	PD_R_PATH_TOO_LONG = 8,      /* normalized path over PD_PATH_MAX or too many segments */
	PD_R_OUT_OF_ORDER = 9,       /* data ahead of the expected sequence during a head */
	PD_R_INCONSISTENT = 10,      /* retransmitted bytes differ from what was judged */
	PD_R_NO_FLOW = 11,           /* data on a listener flow whose start we never saw */
	PD_R_FLOW_TABLE_FULL = 12,   /* flow or accumulation entry could not be created */
	PD_R_MISSED_TAIL_CALL = 13,  /* a chain slot was empty or the tail call failed */
	PD_R_BAD_BODY = 14,          /* invalid Content-Length / chunk framing */
	PD_R_SMUGGLING = 15,         /* Content-Length with Transfer-Encoding, or TE not chunked */
	PD_R_REPLY_FAILED = 16,      /* could not build the 403/RST reply */
	PD_R_FRAGMENT = 17,          /* IP fragment of listener traffic */
	PD_R_BAD_PACKET = 18,        /* truncated or inconsistent L3/L4 headers on a listener */
	PD_R_TOO_MANY_REQUESTS = 19, /* more pipelined heads in one segment than can be judged */
	PD_R_NOT_TLS = 20,           /* a TLS listener's first bytes are not a handshake record */
	PD_R_TLS_NOT_HELLO = 21,     /* the handshake is not a ClientHello */
	PD_R_TLS_LENGTH = 22,        /* ClientHello lengths that do not add up (records, fields, extensions) */
	PD_R_TLS_BAD_SNI = 23,       /* server_name malformed, repeated, or not a host name */
	PD_R_JWT_UNVERIFIED = 24,    /* a token the daemon did not verify in time (or no provider table) */
	PD_R_RL_NO_KEY = 25,         /* a rate limit's key is missing (jwt_sub without a verified token) */
	PD_R_URGENT = 26,            /* urgent data (URG) in bytes that are judged: the server would cut a byte out */
	PD_R_UNCHECKED = 27,         /* a resent piece of a judged head the server may not have, which cannot be checked */
	PD_R_IPV6_CHAIN = 28,        /* an IPv6 extension header chain longer than the entry program walks */
	PD_R_PARTIAL_HEADS = 29,     /* a client holds its share of the partial-head table already */
	PD_R_OWN_STAGE = 30,         /* an operator's own stage could not judge (policyd/stage.h) */
	PD_R_MAX = 32,
};

/* ---- JWT: why a token was refused (counted per reason; PD_J_OK = valid) ------------- */
enum pd_jwt_reason {
	PD_J_OK = 0,
	PD_J_MISSING = 1,       /* no "Authorization: Bearer <token>" */
	PD_J_MALFORMED = 2,     /* not header.payload.signature, bad base64url or JSON, two Authorization headers, crit */
	PD_J_TOO_LARGE = 3,     /* token over PD_JWT_MAX bytes */
	PD_J_ALG = 4,           /* alg not listed for the provider (never "none"), or a key of another kind */
	PD_J_UNKNOWN_KID = 5,   /* no key in the provider's jwks_file has this kid */
	PD_J_SIGNATURE = 6,     /* signature does not verify */
	PD_J_EXPIRED = 7,       /* exp + clock_skew is past */
	PD_J_NOT_YET_VALID = 8, /* nbf - clock_skew is in the future */
	PD_J_ISSUER = 9,        /* iss is not the provider's issuer */
	PD_J_AUDIENCE = 10,     /* aud contains none of the provider's audiences */
	PD_J_CLAIM = 11,        /* exp missing under require_exp, or a route's require claim absent or different */
	PD_J_UNVERIFIED = 12,   /* the daemon could not verify it in time (the RSA/ECDSA path) */
	PD_J_MAX = 16,
};

/* JWS algorithms; a provider's algorithms are a mask of (1 << pd_jwt_alg). */
enum pd_jwt_alg {
	PD_ALG_NONE = 0, /* "none" and anything unknown: never accepted */
	PD_ALG_HS256 = 1,
	PD_ALG_HS384 = 2,
	PD_ALG_HS512 = 3,
	PD_ALG_RS256 = 4,
	PD_ALG_RS384 = 5,
	PD_ALG_RS512 = 6,
	PD_ALG_ES256 = 7,
	PD_ALG_ES384 = 8,
	PD_ALG_MAX = 16,
};
#define PD_JWT_MAX 4096 /* largest token (bytes of header.payload.signature) judged */

/* ---- counters: per-CPU array, summed by the controller ------------------------------ */
enum pd_counter {
	PD_C_REASON_BASE = 0,                          /* + pd_reason: fail-mode events */
	PD_C_VERDICT_BASE = (int)PD_R_MAX,                /* + pd_action: decisions taken */
	PD_C_STAGE_BASE = (int)PD_C_VERDICT_BASE + (int)PD_ACT_MAX,/* + pd_stage: stage runs */
	PD_C_PACKETS = (int)PD_C_STAGE_BASE + (int)PD_STAGE_MAX,/* listener packets seen */
	PD_C_FAST_PATH,                                /* decided from the flow entry alone */
	PD_C_HEAD_PARTIAL,                             /* segments of an incomplete head (accumulated) */
	PD_C_REQUESTS,                                 /* request heads judged */
	PD_C_FLOWS_NEW,                                /* flow entries created */
	PD_C_FAIL_OPEN,                                /* fail-mode events let through (fail_mode open) */
	PD_C_GEN_MISMATCH,                             /* a stage saw a slot of another generation */
	PD_C_TRUNCATED,                                /* segments cut at a judged boundary */
	PD_C_JWT_BASE,                                 /* + pd_jwt_reason: tokens judged (PD_J_OK: valid) */
	PD_C_JWT_CACHE_HIT = (int)PD_C_JWT_BASE + (int)PD_J_MAX, /* verdict from the token cache */
	PD_C_JWT_VERIFIED,                             /* HMAC verified in the dataplane */
	PD_C_JWT_PUNTED,                               /* sent to the daemon (RSA/ECDSA, or JSON the dataplane leaves to it) */
	PD_C_JWT_PUNT_LOST,                            /* could not be sent (ring buffer full) */
	PD_C_RL_ALLOWED,                               /* requests that drew a token */
	PD_C_RL_LIMITED,                               /* requests over a limit (429 or drop) */
	PD_C_RL_SHARED,                                /* drew from a limit's shared bucket (bucket table full) */
	PD_C_EV_SENT,                                  /* decision events written to the ring buffer pd_log */
	PD_C_EV_SUPPRESSED,                            /* decision events over the per-CPU event rate (not sent) */
	PD_C_EV_LOST,                                  /* decision events the ring buffer had no room for */
	PD_C_QUIC_DENIED,                              /* UDP datagrams to a TLS listener with quic: deny */
	PD_C_IGNORED_BASE,                             /* + pd_ignored: segments the server would discard, dropped unjudged */
	PD_C_UPGRADED = (int)PD_C_IGNORED_BASE + 8,    /* connections the server switched to another protocol (101) */
	PD_C_SYN_NEW,                                  /* SYNs of new connections, kept in pd_syn until the handshake completes */
	PD_C_SYN_REFUSED,                              /* of those, answered by the server with no SYN-ACK (a challenge ACK, a RST) */
	PD_C_EGRESS_CLIENT_SIDE,                       /* packets of a flow leaving toward its client that came in on the client's side: not the server's (policyd's replies, spoofed ones) */
	PD_C_MAX = 128,
};

/* Why a listener segment was dropped without being judged: the server's TCP would discard
 * it, so its bytes must not count as what the server receives. */
enum pd_ignored {
	PD_IG_CHECKSUM = 0, /* bad TCP checksum (checked unless the kernel already verified it) */
	PD_IG_TTL = 1,      /* IPv4 TTL / IPv6 hop limit <= 1: expires at this gateway */
	PD_IG_NO_ACK = 2,   /* data without the ACK flag */
	PD_IG_TCP_SIG = 3,  /* a TCP MD5 signature (kind 19) or TCP-AO (kind 29) option */
	PD_IG_PAWS = 4,     /* a timestamp older than the connection's (RFC 7323 PAWS) */
	PD_IG_WINDOW = 5,   /* starts at or beyond the right edge of the server's receive window */
	PD_IG_ACK_UNSENT = 6, /* acknowledges bytes the server has not sent */
	PD_IG_SYN = 7,      /* a SYN flag on a segment of an established connection */
	PD_IG_MAX = 8,
};

/* ---- limits ------------------------------------------------------------------------ */
#define PD_HEAD_MAX 16384    /* largest head ever accumulated (limits.max_head_bytes <= this) */
#define PD_HEAD_SLACK 1024   /* tail room so masked copies stay in bounds */
#define PD_COPY_CHUNK 1024   /* bytes per bpf_skb_load_bytes in head copies */
#define PD_HOST_MAX 256      /* normalized authority, bytes (DNS names are <= 253) */
#define PD_PATTERN_MAX 256   /* host / path pattern bytes stored for verification */
#define PD_PATH_MAX 2048     /* normalized path, bytes */
#define PD_PATH_SEGS 128     /* path segments tracked for dot-segment removal */
#define PD_MAX_RULES 65536   /* routes per generation (per-rule counters) */
#define PD_ROUTE_SLOTS 4     /* routes sharing one path key (differing only by methods) */
#define PD_TAIL_CALL_BUDGET 33 /* the kernel's MAX_TAIL_CALL_CNT */
#define PD_PREFLIGHT_RET 100   /* preflight probes return PD_PREFLIGHT_RET + the action */
#define PD_RULE_NONE 0xffffffffu

/* ---- listeners ---------------------------------------------------------------------- */

/* The listener of an event about a packet whose port is unknown (an IPv6 header chain too
 * long to walk): none. */
#define PD_LISTENER_NONE 0xffff
enum pd_proto { PD_PROTO_HTTP = 1, PD_PROTO_TLS = 2 };

struct pd_listener_key {
	__u32 gen;
	__u16 port; /* host byte order */
	__u16 pad;
};

struct pd_listener {
	__u16 id;
	__u8 proto;       /* pd_proto */
	__u8 addr_family; /* 0: any address; 4 or 6: dst must be in prefix */
	__u8 prefix_len;
	__u8 quic_deny;   /* TLS listener with quic: deny — UDP to its port is dropped */
	__u8 pad[2];
	__u32 addr[4];    /* network byte order */
};

/* ---- per-generation configuration: entry's global pd_cfg[gen] ----------------------- */
struct pd_config {
	__u32 gen_tag;        /* generation number as the controller counts it (for tests) */
	__u8 default_action;  /* pd_action */
	__u8 fail_open;       /* 1: fail_mode open */
	__u8 first_stage;     /* first chain stage after the head parser (or VERDICT) */
	__u8 max_pipeline;    /* heads one segment may have judged within the tail-call budget */
	__u32 max_head_bytes;
	__u8 missing_sni;     /* pd_action for a ClientHello without server_name */
	__u8 quic_deny;       /* some listener has quic_deny: UDP is looked up at all */
	__u8 pad;
	__u8 pad2;
	__u32 partial_per_client; /* partial heads one client (address, IPv6 /64) may hold; 0: any */
	__u32 pad3;
	__u64 hash_seed;      /* seed of the host/path hashes of this generation */
};

/* A client, as the partial-head share counts it: an IPv4 address or an IPv6 /64. */
struct pd_src_key {
	__u32 addr[2];
	__u32 family;
};


/* ---- flows ------------------------------------------------------------------------- */
struct pd_flow_key {
	__u32 saddr[4]; /* IPv4 in saddr[0], rest 0 */
	__u32 daddr[4];
	__u16 sport;    /* network byte order */
	__u16 dport;
	__u8 family;    /* 4 or 6 */
	__u8 pad[3];
};

enum pd_flow_state {
	PD_FS_HEAD = 0,    /* next_seq is where the next request head starts */
	PD_FS_CHUNKED = 1, /* in a chunked body; chunk state below */
	PD_FS_FINAL = 2,   /* verdict holds for the rest of the connection */
};

enum pd_chunk_state {
	PD_CK_SIZE = 0,  /* reading hex chunk-size digits */
	PD_CK_EXT = 1,   /* chunk extension up to LF */
	PD_CK_DATA = 2,  /* chunk data: next_seq marks its end */
	PD_CK_DATA_CR = 3, /* CRLF after chunk data */
	PD_CK_DATA_LF = 4,
	PD_CK_TRAILER = 5, /* after last-chunk: trailer lines until an empty line */
	PD_CK_TRAILER_LINE = 6,
	PD_CK_SIZE_MORE = 7, /* chunk-size digits, at least one read (the line may end) */
};

/* A judged head: where it is and what it was (pd_digest under the flow's digest_key). */
struct pd_judged {
	__u32 seq;          /* sequence number of its first byte */
	__u16 len;          /* 0: none */
	__u16 pad;
	__u64 digest;
};
#define PD_OLDER_HEADS 3 /* earlier judged heads kept until the server acknowledges them */

/* What the server's packets say (pd_egress, at the egress of the same interface). */
enum pd_srv_state {
	PD_SRV_NONE = 0,    /* no SYN-ACK seen: the server's side is unknown, nothing is checked */
	PD_SRV_SEEN = 1,    /* srv_* hold: from the SYN-ACK on, every packet of the server */
};

struct pd_flow {
	__u32 next_seq;     /* FS_HEAD: start of the next head; FS_CHUNKED: first unparsed byte */
	__u8 state;         /* pd_flow_state */
	__u8 verdict;       /* last decision, pd_action */
	__u8 proto;         /* pd_proto */
	__u8 gen;           /* generation of the last decision */
	__u16 listener;
	__u8 accumulating;  /* an entry in the accumulation map holds a partial head */
	__u8 chunk_state;   /* pd_chunk_state */
	__u32 chunk_left;   /* chunk size being parsed / data remaining: low 32 bits (chunk_hi: high) */
	__u32 rule;         /* last matched rule, PD_RULE_NONE if none */
	__u32 ts_recent;    /* newest TSval seen on a segment that was judged or held */
	__u64 requests;     /* heads judged on this flow */
	__u64 last_ns;      /* bpf_ktime of the last head */
	/* The last head allowed: later copies of its bytes must be the same bytes (a
	 * retransmission the server may act on instead of the copy that was judged). */
	__u32 judged_seq;   /* sequence number of its first byte */
	__u16 judged_len;   /* its length, 0: none */
	__u8 held;          /* pd_held: what pd_accum holds of it */
	__u8 has_ts;        /* the client sends TCP timestamps: ts_recent holds */
	__u64 digest;       /* pd_digest of its bytes under digest_key */
	__u64 digest_key;   /* random per connection */
	/* The server's side, written by pd_egress (see pd_srv_state). */
	__u32 srv_ack;      /* highest ACK the server sent: client bytes before it were received */
	__u32 srv_edge;     /* right edge of the receive window it advertised (the highest) */
	__u32 srv_nxt;      /* end of the sequence space it has sent */
	__u8 srv;           /* pd_srv_state */
	__u8 srv_wscale;    /* its window scale (0 if not negotiated) */
	__u8 older_next;    /* next slot of older[] to write */
	__u8 unchecked;     /* unchecked_end holds */
	/* Judged bytes another copy is checked against start here (the oldest kept record, or
	 * where a record older[] no longer holds may be); they end at check_hi. */
	__u32 check_lo;
	/* End of the newest head dropped from older[] before the server acknowledged it: a
	 * copy of bytes before it (and at or after srv_ack) cannot be checked. */
	__u32 unchecked_end;
	/* A SYN on this 4-tuple while the server had a connection on it (srv == SEEN): the
	 * server decides whether it starts a new one (a SYN-ACK acknowledging syn_isn + 1,
	 * seen by pd_egress) or is ignored (its challenge ACK); until then nothing changes. */
	__u32 syn_isn;
	__u8 syn_pending;
	/* pd_upgrade: the connection's first request asked to switch protocols (Upgrade:) and
	 * was allowed; pd_egress then reads the server's first bytes for its 101 */
	__u8 upgrade;
	__u8 pad2[2];
	__u32 check_hi;     /* end of the judged (or read: chunk framing) bytes kept in records */
	__u32 srv_data;     /* sequence number of the server's first data byte (its ISN + 1) */
	/* the interface the client's packets arrive on: a "server" packet that came in there and
	 * leaves again toward the client (a client's spoofed SYN-ACK, ACK or 101, routed back)
	 * says nothing of the server, and pd_egress ignores it */
	__u32 client_if;
	__u32 chunk_hi;     /* high 32 bits of the chunk size (nginx takes sizes up to 2^63) */
	/* earlier judged heads (until acknowledged) and, with the server's side, segments of
	 * chunked-body framing: whole copies are held to their digests */
	struct pd_judged older[PD_OLDER_HEADS];
};

enum pd_upgrade {
	PD_UP_NONE = 0,
	PD_UP_ASKED = 1,    /* the first request, allowed, carried Upgrade: */
	PD_UP_SWITCHED = 2, /* the server answered it 101: no longer HTTP/1.x, not parsed */
};

/* A handshake in progress (LRU_HASH pd_syn, keyed like pd_flows): a SYN creates one, and
 * only a completed handshake moves it into pd_flows, so SYNs (spoofed ones above all) never
 * push established connections out of the flow table. Completed means the client's ACK of
 * the server's SYN-ACK: a spoofed source never sees the SYN-ACK (the server sends it to the
 * real owner of the address), so it cannot acknowledge it, however the server answers. */
struct pd_syn {
	__u32 isn;          /* the client's initial sequence number */
	__u32 tsval;        /* its SYN's TSval, if has_ts */
	__u16 listener;
	__u8 proto;
	__u8 gen;
	__u8 has_ts;
	__u8 refused;       /* the server answered this 4-tuple with no SYN-ACK for this SYN */
	__u8 synack;        /* the server's SYN-ACK for it was seen leave (pd_egress): srv_* hold */
	__u8 srv_wscale;    /* its window scale */
	__u32 client_if;    /* the interface the SYN arrived on (pd_flow.client_if) */
	__u32 srv_isn;      /* its sequence number: the client's ACK must acknowledge srv_isn + 1 */
	__u16 srv_win;      /* its window (never scaled) */
	__u16 pad;
};

/* What the accumulation entry holds of a flow's last judged head. */
enum pd_held {
	PD_HELD_NONE = 0,
	PD_HELD_ALL = 1,    /* all its bytes (it came in several segments, or a resent copy was checked) */
	PD_HELD_PREFIX = 2, /* the first bytes of a copy being resent in pieces */
};

/* Partial heads (LRU_HASH keyed by pd_flow_key). */
struct pd_accum {
	__u32 start_seq; /* sequence number of the head's first byte */
	__u32 len;       /* bytes held */
	__u8 buf[PD_HEAD_MAX + PD_HEAD_SLACK];
};

/* ---- host table (HASH): key = hash of the normalized name or of "*." suffix ----------- */
enum pd_host_kind {
	PD_HOST_EXACT = 1, PD_HOST_WILD = 2, PD_HOST_ANY = 3,  /* hosts: (HTTP authority) */
	PD_SNI_EXACT = 4, PD_SNI_WILD = 5, PD_SNI_ANY = 6,     /* sni: rules (TLS server_name) */
};
#define PD_SNI_KIND_OFFSET 3 /* PD_SNI_x = PD_HOST_x + 3 */

struct pd_host_key {
	__u32 gen;
	__u32 kind;
	__u64 hash; /* pd_hash of the name (EXACT) or of the suffix after "*." (WILD); 0 for ANY */
};

struct pd_host_val {
	__u32 host_id;        /* index of the host entry (or sni rule) in the policy: first match wins */
	__u32 name_len;
	__u32 action;         /* sni rules: pd_action */
	__u32 pad;
	__u8 prefix_lens[PD_PATTERN_MAX / 8]; /* bit L set: a prefix route of this host has length L */
	__u8 name[PD_PATTERN_MAX];         /* the pattern itself, compared on a hash hit */
};

/* ---- route table (HASH): key = (host, kind, length, hash of the path bytes) ----------- */
enum pd_route_kind { PD_ROUTE_EXACT = 1, PD_ROUTE_PREFIX = 2 };

struct pd_route_key {
	__u32 gen;
	__u32 host_id;
	__u32 kind;
	__u32 len;
	__u64 hash;
};

struct pd_route_slot {
	__u32 rule;    /* global route index in policy order (lower = earlier) */
	__u32 methods; /* method bits; 0 = any */
	__u8 action;   /* pd_action */
	__u8 jwt;      /* provider index + 1, 0 = none (later stages) */
	__u8 ratelimit;/* limit index + 1, 0 = none */
	__u8 pad;
	__u32 pad2;
	__u64 jwt_require; /* claim bits (pd_jwt_claims) the token must have: the route's require claims */
};

struct pd_route_val {
	__u32 nslots;
	__u32 pattern_len;
	struct pd_route_slot slots[PD_ROUTE_SLOTS]; /* in policy order */
	__u8 pattern[PD_PATTERN_MAX];
};

/* ---- JWT tables ------------------------------------------------------------------------
 * Providers: ARRAY indexed gen * PD_JWT_PROVIDERS + (route slot jwt - 1). */
#define PD_JWT_PROVIDERS 16
#define PD_JWT_CLAIM_BITS 64 /* claim bits per generation: issuers, audience sets, require pairs */

struct pd_jwt_provider {
	__u32 algs;         /* mask of 1 << pd_jwt_alg */
	__u32 skew;         /* clock_skew, seconds */
	__u8 require_exp;
	__u8 iss_bit;       /* claim bit set when iss is the issuer */
	__u8 aud_bit;       /* claim bit set when aud (or an element of it) is one of the audiences */
	__u8 pad[5];
	__u64 epoch;        /* in every cache key: a digest of the provider, its keys and the claim bits */
	__u64 hs_inner[3][8]; /* HMAC midstates for HS256, HS384, HS512 (zero if not listed) */
	__u64 hs_outer[3][8];
};

/* Claims (HASH): (name, value) of a payload claim -> the claim bits it sets. A key with
 * value_hash 0 and PD_JWT_NAME set marks a name that matters (its value must be understood). */
struct pd_jwt_claim_key {
	__u32 gen;
	__u32 flags;       /* PD_JWT_NAME: name-only entry */
	__u64 name_hash;   /* pd_hash of the claim name */
	__u64 value_hash;  /* pd_hash of the string value (or of a scope word / array element) */
};
#define PD_JWT_NAME 1u

/* Verified-token cache (LRU_HASH). Key: keyed SipHash of the whole token + the provider's
 * epoch, so entries made under other keys or claim bits never match. */
struct pd_jwt_cache_key {
	__u64 token_hash;
	__u64 epoch;
};

enum pd_jwt_cache_state { PD_JC_VALID = 1, PD_JC_INVALID = 2, PD_JC_PENDING = 3 };
#define PD_JWT_NO_TIME 0x7fffffffffffffffLL

struct pd_jwt_cache_val {
	__s64 exp;          /* unix seconds; PD_JWT_NO_TIME: none */
	__s64 nbf;          /* unix seconds; -PD_JWT_NO_TIME: none */
	__u64 claims;       /* claim bits the token has */
	__u64 sub;          /* pd_hash of sub, 0 if none */
	__u64 tail;         /* the token's last 8 bytes: a second check against hash collisions */
	__u64 since_ns;     /* PENDING: bpf_ktime when first sent to the daemon */
	__u64 sent_ns;      /* PENDING: bpf_ktime when last sent */
	__u32 token_len;
	__u8 state;         /* pd_jwt_cache_state */
	__u8 reason;        /* INVALID: pd_jwt_reason */
	__u8 pad[2];
};

/* Runtime values the daemon keeps current (ARRAY, one entry). */
struct pd_runtime {
	__s64 wall_offset_ns;  /* CLOCK_REALTIME - CLOCK_MONOTONIC (bpf_ktime_get_ns), refreshed every second */
	__u64 token_key[2];    /* SipHash key of the token cache, random per daemon start */
	__u64 updated_ns;      /* bpf_ktime-equivalent of the last refresh */
	__u32 log_rate;        /* decision events per second per CPU (pd_log); 0: none are sent */
	__u32 log_burst;       /* events a CPU may send at once after a quiet spell */
};

/* ---- events (RINGBUF) ----------------------------------------------------------------
 * Two ring buffers: pd_events carries tokens to the daemon (the JWT stage waits for the
 * answers), pd_log carries decision events for the operator. Kept apart so a flood of
 * refused requests can never crowd out a token the dataplane is waiting on. */
enum pd_event_type { PD_EV_JWT_VERIFY = 1, PD_EV_DECISION = 2 };

struct pd_event_jwt {
	__u32 type;         /* PD_EV_JWT_VERIFY */
	__u32 gen;
	__u32 provider;     /* index in the generation */
	__u32 token_len;
	struct pd_jwt_cache_key key; /* where the daemon writes its answer */
	__u64 tail;
	__u32 saddr[4];     /* the client's address (IPv4: saddr[0]): the daemon queues by it */
	__u8 family;        /* 4 or 6 */
	__u8 pad[7];
	__u8 token[PD_JWT_MAX];
};

/* A decision the operator sees (pd_log): a request or handshake refused (deny, drop, reset,
 * reject 429, unauthorized 401) or decided by the fail mode (closed, or open: action ALLOW
 * with a reason). One per decision, never one per packet of a decided flow; sent within a
 * per-CPU budget the daemon sets (pd_runtime.log_rate, log_burst), the rest counted
 * (PD_C_EV_SUPPRESSED). */
#define PD_LOG_HOST 128 /* bytes of the normalized host (or server_name) carried */
#define PD_LOG_PATH 128 /* bytes of the normalized path carried */

struct pd_event_decision {
	__u32 type;        /* PD_EV_DECISION */
	__u32 gen_tag;     /* generation (as the controller counts) the decision was taken under */
	__u64 ktime_ns;    /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u32 rule;        /* matched route or sni rule (RuleInfo.rule), PD_RULE_NONE if none */
	__u32 method;      /* pd_method bit of the request, 0 if not parsed */
	__u16 listener;    /* pd_listener.id: the listener's index in the policy */
	__u16 status;      /* HTTP status answered: 403, 401, 429; 0 none (RST both ways, drop, passed) */
	__u8 action;       /* pd_action taken */
	__u8 reason;       /* pd_reason of the fail mode, PD_R_NONE when the policy decided */
	__u8 jwt_reason;   /* pd_jwt_reason (UNAUTH: why the token was refused) */
	__u8 stage;        /* pd_stage that handed over the decision; VERDICT: the default action */
	__u8 proto;        /* pd_proto of the listener */
	__u8 ratelimit;    /* the route's limit index + 1, 0 none */
	__u16 host_len;    /* bytes of the normalized host; host[] holds the first PD_LOG_HOST */
	__u16 path_len;    /* bytes of the normalized path; path[] holds the first PD_LOG_PATH */
	__u16 pad;
	struct pd_flow_key flow;
	__u8 host[PD_LOG_HOST];
	__u8 path[PD_LOG_PATH];
};

/* The per-CPU event budget (PERCPU_ARRAY pd_log_budget, one entry): a token bucket in
 * units of 1e-9 event, so `log_rate` per second accrues exactly as log_rate per ns.
 * last_ns 0 (never used) reads as full. */
#define PD_LOG_UNIT 1000000000ULL
struct pd_log_budget {
	__u64 credit;
	__u64 last_ns;
};

/* ---- rate limits ---------------------------------------------------------------------
 * Token buckets with exact integer credit: every ns adds `add` credit, a token costs
 * `cost`, a bucket holds at most `cap` = burst * cost (add/cost = rate per ns, reduced by
 * their gcd). Limits: ARRAY indexed gen * PD_RL_LIMITS + (route slot ratelimit - 1). */
#define PD_RL_LIMITS 32

enum pd_rl_key {
	PD_RLK_CLIENT_IP = 1, /* IPv4 address, IPv6 /64 */
	PD_RLK_JWT_SUB = 2,
	PD_RLK_HOST = 3,
	PD_RLK_ROUTE = 4,
	PD_RLK_GLOBAL = 5,
	PD_RLK_SHARED = 15,   /* the limit's buckets for keys past its share or the table's size */
};

struct pd_rl_limit {
	__u64 id;       /* stable across generations (hash of name and key kind): buckets carry over */
	__u64 add;      /* credit per ns */
	__u64 cost;     /* credit per token */
	__u64 cap;      /* burst * cost */
	__u64 fill_ns;  /* ceil(cap / add): a bucket idle this long is full (and may be forgotten) */
	__u8 key;       /* pd_rl_key */
	__u8 action;    /* PD_ACT_REJECT (429) or PD_ACT_DROP */
	__u16 pad;
	/* keys of this limit that may hold a bucket of their own (its share of the bucket table,
	 * counted in pd_rl_counts); 0: no bound. A key past it, or one that finds the table full,
	 * draws from one of the limit's PD_RL_SPREAD shared buckets, chosen by the key: a flood of
	 * new keys in one limit never takes another limit's room, nor moves every newcomer of its
	 * own limit onto a single bucket. */
	__u32 max_buckets;
};
#define PD_RL_SPREAD 16 /* shared buckets per limit (PD_RLK_SHARED, k[0] = 0..15) */

struct pd_rl_bucket_key {
	__u64 id;       /* pd_rl_limit.id */
	__u32 kind;     /* pd_rl_key */
	__u32 pad;
	__u64 k[2];     /* the key: address, /64, hash of sub or host, route; 0 for global */
};

struct pd_rl_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 credit;
	__u64 last_ns;  /* bpf_ktime of the last refill */
};

/* ---- method bits (same as config::Method) ------------------------------------------ */
enum pd_method {
	PD_M_GET = 1u << 0,
	PD_M_HEAD = 1u << 1,
	PD_M_POST = 1u << 2,
	PD_M_PUT = 1u << 3,
	PD_M_DELETE = 1u << 4,
	PD_M_CONNECT = 1u << 5,
	PD_M_OPTIONS = 1u << 6,
	PD_M_TRACE = 1u << 7,
	PD_M_PATCH = 1u << 8,
	PD_M_OTHER = 1u << 31,
};

#endif /* PD_ABI_H */
