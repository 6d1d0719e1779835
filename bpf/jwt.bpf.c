/* jwt.bpf.c: the JWT stage. For a route that names a provider, the request is admitted
 * only with a valid token from "Authorization: Bearer".
 *
 * Hit path (a token seen before): one keyed SipHash of the whole token and one lookup in
 * the verified-token cache, then the checks that depend on time and route — exp/nbf with
 * the provider's clock_skew against the wall clock the daemon keeps current, the issuer
 * and audience bits, the route's require bits. A cache entry never outlives exp.
 *
 * Miss path: the token is split and base64url-decoded here; the header and the payload are
 * scanned as JSON (one pass, a byte per bpf_loop step) for alg, crit, iss, aud, exp, nbf,
 * sub and every claim some route requires, each string value hashed and looked up in the
 * claims table, which turns (name, value) into claim bits. HS256/384/512 signatures are
 * verified here: HMAC-SHA2 from the provider's precomputed key midstates (pd_sha2.h).
 * RS* and ES* tokens — and the rare token whose JSON this scanner leaves alone (\u escapes
 * or raw UTF-8 in a claim that matters, exotic numbers) — go to the daemon through the
 * ring buffer; the segment is dropped (PD_ACT_HOLD) and TCP's retransmission finds the
 * daemon's answer in the cache. */
#include "pd_common.h"
#include "pd_sha2.h"

#define DEC_MAX 4096 /* decoded header or payload (3/4 of PD_JWT_MAX) */
#define DEC_IDX(i) ((i) & (DEC_MAX - 1))
#define SIG_MAX 128
#define PENDING_RESEND_NS 1000000000ULL /* ask the daemon again after 1 s */
#define PENDING_GIVE_UP_NS 5000000000ULL /* then the fail mode after 5 s */
#define NEST_MAX 62
#define NAMES_MAX 24 /* top-level members compared for duplicates; more go to the daemon */

enum js_state {
	J_START = 0, J_KEY_OR_END, J_KEY, J_COLON, J_VALUE, J_STR, J_LIT, J_AFTER,
	J_NEST, J_ARR, J_AAFTER, J_END,
};

/* names the scanner knows */
enum js_name { N_OTHER = 0, N_ISS, N_AUD, N_EXP, N_NBF, N_SUB, N_SCOPE, N_ALG, N_CRIT, N_KID };

struct jscan {
	__u32 pos;
	__u32 end;
	__u8 st;
	__u8 esc;
	__u8 header;      /* scanning the JOSE header (alg, crit), not the claims */
	__u8 in_arr;      /* inside a top-level array value */
	__u8 need;        /* a ',' was read: a key / an element must follow */
	__u8 depth;       /* J_NEST: nesting depth */
	__u8 nest_str;
	__u8 nest_esc;
	__u8 name;        /* js_name of the current key */
	__u8 matters;     /* the current key's value is looked at */
	__u8 odd;         /* the current string had \u or bytes >= 0x80 */
	__u8 bad;
	__u8 punt;        /* leave this token to the daemon */
	__u8 alg;         /* pd_jwt_alg from the header */
	__u8 has_alg;
	__u8 lit_num;     /* 0: digits so far, 1: in the fraction, 2: not a plain number */
	__u16 seen;       /* bit per js_name: a known name twice is malformed */
	__u8 lit_digits;
	__u8 pad;
	__u32 name_len;
	__u32 val_len;
	__u32 word_len;
	__u32 gen;
	__u64 nest_stack; /* bit d: level d is an array */
	__u64 names[NAMES_MAX]; /* hashes of the member names seen at the top level */
	__u32 nnames;
	__u64 seed;
	__u64 name_word;
	__u64 name_hash;
	__u64 val_word;
	__u64 val_hash;
	__u64 word_hash;
	__u64 num;
	__u64 claims;
	__u64 sub;
	__s64 exp;
	__s64 nbf;
};

struct b64 {
	__u32 src;
	__u32 end;
	__u32 dst;
	__u32 acc;
	__u32 bits;
	__u8 bad;
	__u8 to_sig; /* write into sig[] instead of dec[] */
};

struct tokscan {
	__u32 pos;
	__u32 end;
	__u32 dot1;
	__u32 dot2;
	__u32 dots;
	__u8 bad;
};

struct sip {
	__u64 v0, v1, v2, v3;
	__u32 pos;
	__u32 end;
};

struct jwt_work {
	struct pd_sha2 sha;
	struct jscan js;
	struct b64 bd;
	struct tokscan ts;
	struct sip sip;
	__u8 dec[DEC_MAX + 64];
	__u8 sig[SIG_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct jwt_work);
} jwt_work SEC(".maps");

struct jwt_cb {
	struct pd_ctx *ctx;
	struct jwt_work *w;
};

PD_INLINE __u8 tok(struct pd_ctx *ctx, __u32 i)
{
	return ctx->head.buf[PD_HEAD_IDX(i)];
}

/* ---- SipHash-2-4 of the token, keyed per daemon start ------------------------------- */
#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

PD_INLINE void sipround(struct sip *s)
{
	__u64 v0 = s->v0, v1 = s->v1, v2 = s->v2, v3 = s->v3;
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);
	s->v0 = v0; s->v1 = v1; s->v2 = v2; s->v3 = v3;
}

PD_INLINE __u64 word_at(struct pd_ctx *ctx, __u32 p, __u32 n)
{
	__u64 m = 0;
#pragma unroll
	for (int k = 0; k < 8; k++)
		if ((__u32)k < n)
			m |= (__u64)tok(ctx, p + k) << (8 * k);
	return m;
}

static long sip_cb(__u32 i, struct jwt_cb *cb)
{
	struct sip *s = &cb->w->sip;
	if (s->pos + 8 > s->end)
		return 1;
	__u64 m = word_at(cb->ctx, s->pos, 8);
	s->v3 ^= m;
	sipround(s); /* two compression rounds: sipround does two */
	s->v0 ^= m;
	s->pos += 8;
	return 0;
}

PD_INLINE __u64 siphash_token(struct pd_ctx *ctx, struct jwt_work *w, __u32 off, __u32 len,
			      const __u64 key[2])
{
	struct sip *s = &w->sip;
	s->v0 = 0x736f6d6570736575ULL ^ key[0];
	s->v1 = 0x646f72616e646f6dULL ^ key[1];
	s->v2 = 0x6c7967656e657261ULL ^ key[0];
	s->v3 = 0x7465646279746573ULL ^ key[1];
	s->pos = off;
	s->end = off + len;
	struct jwt_cb cb = { .ctx = ctx, .w = w };
	bpf_loop(PD_JWT_MAX / 8 + 1, sip_cb, &cb, 0);
	__u32 left = s->end - s->pos;
	__u64 b = ((__u64)len << 56) | word_at(ctx, s->pos, left & 7);
	s->v3 ^= b;
	sipround(s);
	s->v0 ^= b;
	s->v2 ^= 0xff;
	sipround(s);
	sipround(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* ---- the token's shape: base64url parts joined by exactly two dots ------------------- */
PD_INLINE int b64val(__u8 c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

static long tokscan_cb(__u32 i, struct jwt_cb *cb)
{
	struct tokscan *t = &cb->w->ts;
	if (t->pos >= t->end)
		return 1;
	__u8 c = tok(cb->ctx, t->pos);
	if (c == '.') {
		if (t->dots == 0)
			t->dot1 = t->pos;
		else if (t->dots == 1)
			t->dot2 = t->pos;
		t->dots++;
	} else if (b64val(c) < 0) {
		t->bad = 1;
		return 1;
	}
	t->pos++;
	return 0;
}

/* ---- base64url (no padding; unused trailing bits must be zero) ----------------------- */
static long b64_cb(__u32 i, struct jwt_cb *cb)
{
	struct b64 *d = &cb->w->bd;
	if (d->src >= d->end)
		return 1;
	int v = b64val(tok(cb->ctx, d->src));
	if (v < 0) {
		d->bad = 1;
		return 1;
	}
	d->acc = (d->acc << 6) | (__u32)v;
	d->bits += 6;
	if (d->bits >= 8) {
		d->bits -= 8;
		__u8 byte = (d->acc >> d->bits) & 0xff;
		if (d->to_sig)
			cb->w->sig[d->dst & (SIG_MAX - 1)] = byte;
		else
			cb->w->dec[DEC_IDX(d->dst)] = byte;
		d->dst++;
		d->acc &= (1u << d->bits) - 1;
	}
	d->src++;
	return 0;
}

/* Decodes head[off, off+len) into dec[] (or sig[]); returns the decoded length or -1. */
PD_INLINE int b64_decode(struct pd_ctx *ctx, struct jwt_work *w, __u32 off, __u32 len, int to_sig)
{
	if ((len & 3) == 1)
		return -1;
	struct b64 *d = &w->bd;
	__builtin_memset(d, 0, sizeof(*d));
	d->src = off;
	d->end = off + len;
	d->to_sig = to_sig;
	struct jwt_cb cb = { .ctx = ctx, .w = w };
	bpf_loop(PD_JWT_MAX, b64_cb, &cb, 0);
	if (d->bad || d->src != d->end || d->acc != 0) /* leftover bits must be zero */
		return -1;
	return d->dst;
}

/* ---- JSON: one pass over dec[0, end) --------------------------------------------------- */
#define W3(a, b, c) ((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16)
#define W4(a, b, c, d) (W3(a, b, c) | (__u64)(d) << 24)
#define W5(a, b, c, d, e) (W4(a, b, c, d) | (__u64)(e) << 32)

PD_INLINE __u8 classify(struct jscan *j)
{
	__u64 w = j->name_word;
	if (j->name_len == 3) {
		if (j->header)
			return w == W3('a', 'l', 'g') ? N_ALG : w == W3('k', 'i', 'd') ? N_KID : N_OTHER;
		if (w == W3('i', 's', 's'))
			return N_ISS;
		if (w == W3('a', 'u', 'd'))
			return N_AUD;
		if (w == W3('e', 'x', 'p'))
			return N_EXP;
		if (w == W3('n', 'b', 'f'))
			return N_NBF;
		if (w == W3('s', 'u', 'b'))
			return N_SUB;
	} else if (j->name_len == 4 && j->header && w == W4('c', 'r', 'i', 't')) {
		return N_CRIT;
	} else if (j->name_len == 5 && !j->header && w == W5('s', 'c', 'o', 'p', 'e')) {
		return N_SCOPE;
	}
	return N_OTHER;
}

PD_INLINE __u8 alg_of(struct jscan *j)
{
	if (j->val_len != 5)
		return PD_ALG_NONE;
	__u64 w = j->val_word;
	__u64 fam = w & 0xffff, bits = w >> 16;
	__u8 base;
	if (fam == ('H' | 'S' << 8))
		base = PD_ALG_HS256;
	else if (fam == ('R' | 'S' << 8))
		base = PD_ALG_RS256;
	else if (fam == ('E' | 'S' << 8))
		base = PD_ALG_ES256;
	else
		return PD_ALG_NONE;
	if (bits == W3('2', '5', '6'))
		return base;
	if (bits == W3('3', '8', '4'))
		return base + 1;
	if (bits == W3('5', '1', '2') && base != PD_ALG_ES256)
		return base + 2;
	return PD_ALG_NONE;
}

PD_INLINE void claim_lookup(struct jscan *j, __u64 value_hash)
{
	struct pd_jwt_claim_key k = { .gen = j->gen, .flags = 0, .name_hash = j->name_hash,
				      .value_hash = value_hash };
	__u64 *bits = bpf_map_lookup_elem(&pd_jwt_claims, &k);
	if (bits)
		j->claims |= *bits;
}

PD_INLINE void name_done(struct jscan *j)
{
	/* a name that repeats an earlier one (by hash): the daemon's parser refuses duplicates */
	__u32 n = j->nnames;
	for (__u32 k = 0; k < NAMES_MAX; k++)
		if (k < n && j->names[k] == j->name_hash)
			j->punt = 1;
	if (n < NAMES_MAX)
		j->names[n] = j->name_hash;
	else
		j->punt = 1;
	j->nnames = n + 1;
	j->name = classify(j);
	if (j->name != N_OTHER) {
		__u16 bit = 1u << j->name;
		if (j->seen & bit)
			j->bad = 1; /* a claim the decision rests on, twice */
		j->seen |= bit;
	}
	if (j->odd)
		j->punt = 1; /* an escaped or non-ASCII name: leave it to the daemon */
	j->matters = j->name != N_OTHER;
	if (!j->header && j->name == N_OTHER) {
		struct pd_jwt_claim_key k = { .gen = j->gen, .flags = PD_JWT_NAME,
					      .name_hash = j->name_hash };
		j->matters = bpf_map_lookup_elem(&pd_jwt_claims, &k) != 0;
	}
}

/* A complete string value (or array element). What the daemon's parser would call
 * malformed (a claim of the wrong JSON type) is left to it: punt. */
PD_INLINE void string_done(struct jscan *j)
{
	if (!j->matters)
		return;
	if (j->odd) {
		j->punt = 1;
		return;
	}
	if (j->header) {
		if (j->in_arr)
			j->punt = 1; /* alg or kid that is not a string */
		else if (j->name == N_ALG) {
			j->alg = alg_of(j);
			j->has_alg = 1;
		}
		return;
	}
	switch (j->name) {
	case N_EXP:
	case N_NBF:
		j->punt = 1; /* NumericDate as a string */
		return;
	case N_SUB:
	case N_ISS:
		if (j->in_arr) {
			j->punt = 1;
			return;
		}
		if (j->name == N_SUB)
			j->sub = j->val_hash ? j->val_hash : 1;
		break;
	case N_SCOPE:
		if (!j->in_arr) { /* a scope string is judged word by word */
			if (j->word_len)
				claim_lookup(j, j->word_hash);
			return;
		}
		break;
	}
	claim_lookup(j, j->val_hash);
}

/* A complete literal: a number, true, false or null. Only exp and nbf take one (whole
 * seconds; a fraction goes to the daemon); a literal where a string belongs is the
 * daemon's to refuse. Other claims' literals never satisfy a require. */
PD_INLINE void literal_done(struct jscan *j)
{
	if (!j->matters)
		return;
	if (j->header || j->name == N_ISS || j->name == N_SUB || j->name == N_AUD) {
		j->punt = 1;
		return;
	}
	if (j->name == N_EXP || j->name == N_NBF) {
		if (j->in_arr || j->lit_num != 0 || j->lit_digits == 0 || j->lit_digits > 18) {
			j->punt = 1;
			return;
		}
		if (j->name == N_EXP)
			j->exp = (__s64)j->num;
		else
			j->nbf = (__s64)j->num;
	}
}

PD_INLINE void begin_value(struct jscan *j)
{
	j->val_hash = pd_hash_init(j->seed);
	j->val_word = 0;
	j->val_len = 0;
	j->word_hash = pd_hash_init(j->seed);
	j->word_len = 0;
	j->odd = 0;
	j->esc = 0;
}

PD_INLINE void feed_value(struct jscan *j, __u8 c)
{
	j->val_hash = pd_hash_byte(j->val_hash, c);
	if (j->val_len < 8)
		j->val_word |= (__u64)c << (8 * j->val_len);
	j->val_len++;
	if (j->name == N_SCOPE && !j->header && !j->in_arr) {
		if (c == ' ') {
			if (j->word_len)
				claim_lookup(j, j->word_hash);
			j->word_hash = pd_hash_init(j->seed);
			j->word_len = 0;
		} else {
			j->word_hash = pd_hash_byte(j->word_hash, c);
			j->word_len++;
		}
	}
}

PD_INLINE int is_ws(__u8 c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Starts the value whose first byte is c (J_VALUE, or an element in J_ARR). */
PD_INLINE void start_value(struct jscan *j, __u8 c)
{
	if (c == '"') {
		begin_value(j);
		j->st = J_STR;
	} else if (c == '{' || c == '[') {
		if (c == '[' && !j->in_arr) {
			j->in_arr = 1;
			j->need = 0;
			j->st = J_ARR;
			return;
		}
		j->depth = 1;
		j->nest_stack = c == '[';
		j->nest_str = 0;
		j->st = J_NEST;
	} else if ((c >= '0' && c <= '9') || c == '-' || c == 't' || c == 'f' || c == 'n') {
		begin_value(j);
		int digit = c >= '0' && c <= '9';
		j->num = digit ? c - '0' : 0;
		j->lit_digits = digit;
		j->lit_num = digit ? 0 : 2; /* '-', true, false, null: not a plain number */
		feed_value(j, c);
		j->st = J_LIT;
	} else {
		j->bad = 1;
	}
}

/* One byte inside a string (a name or a value): 0 consumed (a backslash), 1 the closing
 * quote, 2 a byte of the string's content in *out, -1 invalid JSON. A \u escape is not
 * decoded: the string is marked odd (what it means is left to the daemon). */
PD_INLINE int string_byte(struct jscan *j, __u8 c, __u8 *out)
{
	if (j->esc) {
		j->esc = 0;
		switch (c) {
		case 'b': *out = 8; return 2;
		case 'f': *out = 12; return 2;
		case 'n': *out = 10; return 2;
		case 'r': *out = 13; return 2;
		case 't': *out = 9; return 2;
		case 'u': j->odd = 1; *out = c; return 2;
		case '"': case '\\': case '/': *out = c; return 2;
		default: return -1;
		}
	}
	if (c == '\\') {
		j->esc = 1;
		return 0;
	}
	if (c < 0x20)
		return -1;
	if (c == '"')
		return 1;
	*out = c;
	return 2;
}

static long json_cb(__u32 i, struct jwt_cb *cb)
{
	struct jwt_work *w = cb->w;
	struct jscan *j = &w->js;
	if (j->pos >= j->end || j->bad)
		return 1;
	__u8 c = w->dec[DEC_IDX(j->pos)];
	j->pos++;
	if (c >= 0x80) { /* UTF-8 (or not): the daemon's parser checks it */
		j->punt = 1;
		return 1;
	}

	if (j->st == J_STR) {
		__u8 out = 0;
		int k = string_byte(j, c, &out);
		if (k < 0) {
			j->bad = 1;
			return 1;
		}
		if (k == 2)
			feed_value(j, out);
		if (k == 1) {
			string_done(j);
			j->st = j->in_arr ? J_AAFTER : J_AFTER;
		}
		return 0;
	}
	if (j->st == J_LIT) {
		int delim = c == ',' || c == '}' || c == ']' || is_ws(c);
		if (!delim) {
			if (c >= '0' && c <= '9') {
				if (j->lit_num == 0) {
					j->num = j->num * 10 + (c - '0');
					j->lit_digits++;
				}
			} else if (c == '.' && j->lit_num == 0) {
				j->lit_num = 1;
			} else if ((c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == 'E' || c == '.') {
				j->lit_num = 2;
			} else {
				j->bad = 1;
				return 1;
			}
			feed_value(j, c);
			return 0;
		}
		literal_done(j);
		j->st = j->in_arr ? J_AAFTER : J_AFTER;
		/* the delimiter is handled below */
	}
	if (j->st == J_KEY) {
		__u8 out = 0;
		int k = string_byte(j, c, &out);
		if (k < 0) {
			j->bad = 1;
			return 1;
		}
		if (k == 1) {
			name_done(j);
			j->st = J_COLON;
		} else if (k == 2) {
			j->name_hash = pd_hash_byte(j->name_hash, out);
			if (j->name_len < 8)
				j->name_word |= (__u64)out << (8 * j->name_len);
			j->name_len++;
		}
		return 0;
	}
	if (j->st == J_NEST) {
		if (j->nest_str) {
			if (j->nest_esc)
				j->nest_esc = 0;
			else if (c == '\\')
				j->nest_esc = 1;
			else if (c == '"')
				j->nest_str = 0;
			else if (c < 0x20)
				j->bad = 1;
			return 0;
		}
		if (c == '"') {
			j->nest_str = 1;
		} else if (c == '{' || c == '[') {
			if (j->depth >= NEST_MAX) {
				j->punt = 1;
				return 1;
			}
			j->nest_stack = (j->nest_stack << 1) | (c == '[');
			j->depth++;
		} else if (c == '}' || c == ']') {
			if ((j->nest_stack & 1) != (c == ']')) {
				j->bad = 1;
				return 1;
			}
			j->nest_stack >>= 1;
			j->depth--;
			if (j->depth == 0) {
				if (j->matters && (j->header || j->name != N_OTHER))
					j->punt = 1; /* exp as an object, say: the daemon decides */
				j->st = j->in_arr ? J_AAFTER : J_AFTER;
			}
		}
		return 0;
	}
	if (is_ws(c))
		return 0;
	switch (j->st) {
	case J_START:
		if (c != '{')
			j->bad = 1;
		j->st = J_KEY_OR_END;
		j->need = 0;
		return 0;
	case J_KEY_OR_END:
		if (c == '}' && !j->need) {
			j->st = J_END;
			return 0;
		}
		if (c != '"') {
			j->bad = 1;
			return 1;
		}
		j->name_hash = pd_hash_init(j->seed);
		j->name_word = 0;
		j->name_len = 0;
		j->odd = 0;
		j->esc = 0;
		j->st = J_KEY;
		return 0;
	case J_COLON:
		if (c != ':')
			j->bad = 1;
		j->st = J_VALUE;
		return 0;
	case J_VALUE:
		start_value(j, c);
		return 0;
	case J_AFTER:
		if (c == ',') {
			j->need = 1;
			j->st = J_KEY_OR_END;
		} else if (c == '}') {
			j->st = J_END;
		} else {
			j->bad = 1;
		}
		return 0;
	case J_ARR:
		if (c == ']' && !j->need) {
			j->in_arr = 0;
			j->st = J_AFTER;
			return 0;
		}
		start_value(j, c);
		return 0;
	case J_AAFTER:
		if (c == ',') {
			j->need = 1;
			j->st = J_ARR;
		} else if (c == ']') {
			j->in_arr = 0;
			j->st = J_AFTER;
		} else {
			j->bad = 1;
		}
		return 0;
	default: /* J_END: only whitespace may follow */
		j->bad = 1;
		return 1;
	}
}

PD_INLINE void json_scan(struct pd_ctx *ctx, struct jwt_work *w, __u32 len, int header)
{
	struct jscan *j = &w->js;
	__builtin_memset(j, 0, sizeof(*j));
	j->end = len;
	j->header = header;
	j->gen = ctx->gen & 1;
	j->seed = ctx->hash_seed;
	j->exp = PD_JWT_NO_TIME;
	j->nbf = -PD_JWT_NO_TIME;
	struct jwt_cb cb = { .ctx = ctx, .w = w };
	bpf_loop(DEC_MAX, json_cb, &cb, 0);
	if (j->st != J_END && !j->punt)
		j->bad = 1; /* cut short */
}

/* ---- the decision ---------------------------------------------------------------------- */
PD_INLINE __u8 judge(const struct pd_jwt_cache_val *v, const struct pd_jwt_provider *p, __s64 now,
		     __u64 require)
{
	if (v->state == PD_JC_INVALID)
		return v->reason ? v->reason : PD_J_MALFORMED;
	__s64 skew = p->skew;
	if (v->exp == PD_JWT_NO_TIME) {
		if (p->require_exp)
			return PD_J_CLAIM;
	} else if (now > v->exp + skew) {
		return PD_J_EXPIRED;
	}
	if (v->nbf != -PD_JWT_NO_TIME && now < v->nbf - skew)
		return PD_J_NOT_YET_VALID;
	if (!(v->claims & (1ULL << (p->iss_bit & 63))))
		return PD_J_ISSUER;
	if (!(v->claims & (1ULL << (p->aud_bit & 63))))
		return PD_J_AUDIENCE;
	if ((v->claims & require) != require)
		return PD_J_CLAIM;
	return PD_J_OK;
}

PD_INLINE int refuse(struct __sk_buff *skb, struct pd_ctx *ctx, __u8 reason)
{
	ctx->jwt_reason = reason;
	ctx->action = PD_ACT_UNAUTH;
	pd_count_ctx(ctx, PD_C_JWT_BASE + (reason & (PD_J_MAX - 1)));
	return pd_tail(skb, ctx, PD_STAGE_VERDICT);
}

PD_INLINE int hold(struct __sk_buff *skb, struct pd_ctx *ctx)
{
	ctx->action = PD_ACT_HOLD;
	return pd_tail(skb, ctx, PD_STAGE_VERDICT);
}

PD_INLINE int admit(struct __sk_buff *skb, struct pd_ctx *ctx, const struct pd_jwt_cache_val *v)
{
	ctx->jwt_reason = PD_J_OK;
	ctx->jwt_sub = v->sub;
	pd_count_ctx(ctx, PD_C_JWT_BASE + PD_J_OK);
	return pd_chain_next(skb, ctx);
}

/* Send the token to the daemon; the segment is held until its answer is in the cache. */
PD_INLINE int punt(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_jwt_cache_key *key,
		   struct pd_jwt_cache_val *pending, __u32 provider, __u32 off, __u32 len, __u64 tail)
{
	if (ctx->preflight)
		return hold(skb, ctx);
	__u64 now = bpf_ktime_get_ns();
	if (pending) {
		if (now - pending->since_ns > PENDING_GIVE_UP_NS) {
			bpf_map_delete_elem(&pd_jwt_cache, key);
			pd_fail(ctx, PD_R_JWT_UNVERIFIED);
			return pd_tail(skb, ctx, PD_STAGE_VERDICT);
		}
		if (now - pending->sent_ns < PENDING_RESEND_NS)
			return hold(skb, ctx);
		pending->sent_ns = now;
	} else {
		struct pd_jwt_cache_val v = { .state = PD_JC_PENDING, .since_ns = now, .sent_ns = now,
					      .token_len = len, .tail = tail };
		bpf_map_update_elem(&pd_jwt_cache, key, &v, BPF_ANY);
	}
	if (len > PD_JWT_MAX || off > PD_HEAD_MAX)
		return hold(skb, ctx);
	struct pd_event_jwt *ev = bpf_ringbuf_reserve(&pd_events, sizeof(*ev), 0);
	if (!ev) {
		pd_count(PD_C_JWT_PUNT_LOST);
		return hold(skb, ctx);
	}
	ev->type = PD_EV_JWT_VERIFY;
	ev->gen = ctx->gen & 1;
	ev->provider = provider;
	ev->token_len = len;
	ev->key = *key;
	ev->tail = tail;
	__builtin_memcpy(ev->saddr, ctx->key.saddr, sizeof(ev->saddr));
	ev->family = ctx->family;
	bpf_probe_read_kernel(ev->token, len, &ctx->head.buf[off]);
	bpf_ringbuf_submit(ev, 0);
	pd_count(PD_C_JWT_PUNTED);
	return hold(skb, ctx);
}

SEC("tc")
int pd_jwt(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	if (ctx->proto != PD_PROTO_HTTP || !ctx->jwt || ctx->action != PD_ACT_ALLOW)
		return pd_chain_next(skb, ctx); /* no token needed, or refused anyway */
	pd_stage_enter(ctx, PD_STAGE_JWT);

	__u32 zero = 0;
	struct jwt_work *w = bpf_map_lookup_elem(&jwt_work, &zero);
	struct pd_runtime *rt = bpf_map_lookup_elem(&pd_runtime, &zero);
	__u32 pidx = (__u32)(ctx->gen & 1) * PD_JWT_PROVIDERS + ((ctx->jwt - 1) & (PD_JWT_PROVIDERS - 1));
	struct pd_jwt_provider *p = bpf_map_lookup_elem(&pd_jwt_providers, &pidx);
	if (!w || !rt || !p) {
		pd_fail(ctx, PD_R_JWT_UNVERIFIED);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}

	/* "Authorization: Bearer <token>", exactly one Authorization header */
	if (ctx->auth_count == 0)
		return refuse(skb, ctx, PD_J_MISSING);
	if (ctx->auth_count > 1)
		return refuse(skb, ctx, PD_J_MALFORMED);
	__u32 a = ctx->auth_off, n = ctx->auth_len;
	if (n < 8 || a > PD_HEAD_MAX)
		return refuse(skb, ctx, PD_J_MISSING);
	if ((tok(ctx, a) | 0x20) != 'b' || (tok(ctx, a + 1) | 0x20) != 'e' || (tok(ctx, a + 2) | 0x20) != 'a' ||
	    (tok(ctx, a + 3) | 0x20) != 'r' || (tok(ctx, a + 4) | 0x20) != 'e' || (tok(ctx, a + 5) | 0x20) != 'r' ||
	    tok(ctx, a + 6) != ' ')
		return refuse(skb, ctx, PD_J_MISSING); /* another scheme: no bearer token */
	__u32 off = a + 7, end = a + n;
	for (int k = 0; k < 16 && off < end && tok(ctx, off) == ' '; k++)
		off++;
	if (off >= end)
		return refuse(skb, ctx, PD_J_MISSING);
	__u32 len = end - off;
	if (len > PD_JWT_MAX)
		return refuse(skb, ctx, PD_J_TOO_LARGE);

	__s64 now = (__s64)((bpf_ktime_get_ns() + rt->wall_offset_ns) / 1000000000ULL);
	__u64 tail = word_at(ctx, end - 8, len >= 8 ? 8 : 0);
	struct pd_jwt_cache_key key = { .epoch = p->epoch };
	key.token_hash = siphash_token(ctx, w, off, len, rt->token_key);

	struct pd_jwt_cache_val *hit = bpf_map_lookup_elem(&pd_jwt_cache, &key);
	if (hit && hit->token_len == len && (hit->state == PD_JC_PENDING || hit->tail == tail)) {
		if (hit->state == PD_JC_PENDING)
			return punt(skb, ctx, &key, hit, pidx, off, len, tail);
		pd_count_ctx(ctx, PD_C_JWT_CACHE_HIT);
		__u8 r = judge(hit, p, now, ctx->jwt_require);
		if (r == PD_J_EXPIRED && !ctx->preflight) {
			/* never valid past exp: from now on the entry says so without a look at the clock */
			hit->state = PD_JC_INVALID;
			hit->reason = PD_J_EXPIRED;
		}
		if (r != PD_J_OK)
			return refuse(skb, ctx, r);
		return admit(skb, ctx, hit);
	}

	/* ---- a token not seen before ---- */
	struct pd_jwt_cache_val v = { .token_len = len, .tail = tail, .state = PD_JC_INVALID };
	struct tokscan *t = &w->ts;
	__builtin_memset(t, 0, sizeof(*t));
	t->pos = off;
	t->end = end;
	struct jwt_cb cb = { .ctx = ctx, .w = w };
	bpf_loop(PD_JWT_MAX, tokscan_cb, &cb, 0);
	__u32 dot1 = t->dot1, dot2 = t->dot2;
	if (t->bad || t->dots != 2) {
		v.reason = PD_J_MALFORMED;
		goto invalid;
	}

	int hl = b64_decode(ctx, w, off, dot1 - off, 0);
	if (hl <= 0) {
		v.reason = PD_J_MALFORMED;
		goto invalid;
	}
	json_scan(ctx, w, (__u32)hl, 1);
	if (w->js.bad || w->js.seen & (1u << N_CRIT)) {
		v.reason = PD_J_MALFORMED;
		goto invalid;
	}
	if (w->js.punt || !w->js.has_alg)
		return punt(skb, ctx, &key, 0, pidx, off, len, tail);
	__u8 alg = w->js.alg;

	/* the payload is parsed before the algorithm is judged, as the daemon's parser does */
	int pl = b64_decode(ctx, w, dot1 + 1, dot2 - dot1 - 1, 0);
	if (pl <= 0) {
		v.reason = PD_J_MALFORMED;
		goto invalid;
	}
	json_scan(ctx, w, (__u32)pl, 0);
	if (w->js.bad) {
		v.reason = PD_J_MALFORMED;
		goto invalid;
	}
	if (w->js.punt)
		return punt(skb, ctx, &key, 0, pidx, off, len, tail);
	if (alg == PD_ALG_NONE || !(p->algs & (1u << alg))) {
		v.reason = PD_J_ALG;
		goto invalid;
	}
	if (alg > PD_ALG_HS512)
		return punt(skb, ctx, &key, 0, pidx, off, len, tail); /* RSA / ECDSA: the daemon */
	v.exp = w->js.exp;
	v.nbf = w->js.nbf;
	v.claims = w->js.claims;
	v.sub = w->js.sub;

	__u32 hs = alg - PD_ALG_HS256; /* 0, 1, 2 */
	__u32 mac_len = 32 + 16 * hs;
	int sl = b64_decode(ctx, w, dot2 + 1, end - dot2 - 1, 1);
	if (sl < 0) {
		v.reason = PD_J_MALFORMED;
		goto invalid;
	}
	if ((__u32)sl != mac_len) {
		v.reason = PD_J_SIGNATURE;
		goto invalid;
	}
	if (pd_hmac_sha2(&w->sha, ctx->head.buf, off, dot2 - off, hs == 0 ? 256 : hs == 1 ? 384 : 512,
			 p->hs_inner[hs & 3], p->hs_outer[hs & 3]) < 0) {
		pd_fail(ctx, PD_R_JWT_UNVERIFIED);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}
	pd_count_ctx(ctx, PD_C_JWT_VERIFIED);
	if (!pd_sha2_equal(&w->sha, w->sig, mac_len)) {
		v.reason = PD_J_SIGNATURE;
		goto invalid;
	}
	v.state = PD_JC_VALID;
	v.reason = PD_J_OK;
	if (!ctx->preflight)
		bpf_map_update_elem(&pd_jwt_cache, &key, &v, BPF_ANY);
	__u8 r = judge(&v, p, now, ctx->jwt_require);
	if (r != PD_J_OK)
		return refuse(skb, ctx, r);
	return admit(skb, ctx, &v);

invalid:
	if (!ctx->preflight)
		bpf_map_update_elem(&pd_jwt_cache, &key, &v, BPF_ANY);
	return refuse(skb, ctx, v.reason);
}
