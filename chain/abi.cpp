#include "chain/abi.hpp"

namespace policyd::abi {

std::string_view reason_name(unsigned reason) {
  switch (reason) {
    case PD_R_NONE: return "none";
    case PD_R_HEAD_TOO_LARGE: return "head_too_large";
    case PD_R_BAD_REQUEST_LINE: return "bad_request_line";
    case PD_R_BAD_HEADER: return "bad_header";
    case PD_R_NO_HOST: return "no_host";
    case PD_R_MULTI_HOST: return "multiple_host";
    case PD_R_BAD_HOST: return "bad_host";
    case PD_R_BAD_PATH: return "bad_path";
    case PD_R_PATH_TOO_LONG: return "path_too_long";
    case PD_R_OUT_OF_ORDER: return "out_of_order";
    case PD_R_INCONSISTENT: return "inconsistent_retransmission";
    case PD_R_NO_FLOW: return "no_flow_state";
    case PD_R_FLOW_TABLE_FULL: return "flow_table_full";
    case PD_R_MISSED_TAIL_CALL: return "missed_tail_call";
    case PD_R_BAD_BODY: return "bad_body_framing";
    case PD_R_SMUGGLING: return "smuggling_signal";
    case PD_R_REPLY_FAILED: return "reply_failed";
    case PD_R_FRAGMENT: return "ip_fragment";
    case PD_R_BAD_PACKET: return "bad_packet";
    case PD_R_IPV6_CHAIN: return "ipv6_header_chain";
    case PD_R_PARTIAL_HEADS: return "partial_heads_per_client";
    case PD_R_OWN_STAGE: return "own_stage_failed";
    case PD_R_TOO_MANY_REQUESTS: return "pipeline_cut";
    case PD_R_NOT_TLS: return "not_tls";
    case PD_R_TLS_NOT_HELLO: return "not_client_hello";
    case PD_R_TLS_LENGTH: return "client_hello_lengths";
    case PD_R_TLS_BAD_SNI: return "bad_server_name";
    case PD_R_JWT_UNVERIFIED: return "jwt_unverified";
    case PD_R_RL_NO_KEY: return "ratelimit_key_missing";
    case PD_R_URGENT: return "urgent_data";
    case PD_R_UNCHECKED: return "unchecked_retransmission";
  }
  return "unknown";
}

std::string_view ignored_name(unsigned ignored) {
  switch (ignored) {
    case PD_IG_CHECKSUM: return "bad_checksum";
    case PD_IG_TTL: return "ttl_expiring";
    case PD_IG_NO_ACK: return "no_ack";
    case PD_IG_TCP_SIG: return "tcp_signature_option";
    case PD_IG_PAWS: return "old_timestamp";
    case PD_IG_WINDOW: return "outside_window";
    case PD_IG_ACK_UNSENT: return "ack_of_unsent_data";
    case PD_IG_SYN: return "syn_on_connection";
  }
  return "unknown";
}

std::string_view action_name(unsigned action) {
  switch (action) {
    case PD_ACT_NONE: return "none";
    case PD_ACT_ALLOW: return "allow";
    case PD_ACT_DENY: return "deny";
    case PD_ACT_DROP: return "drop";
    case PD_ACT_RESET: return "reset";
    case PD_ACT_REJECT: return "reject";
    case PD_ACT_UNAUTH: return "unauthorized";
    case PD_ACT_HOLD: return "hold";
  }
  return "unknown";
}

std::string_view stage_name(unsigned stage) {
  switch (stage) {
    case PD_STAGE_ENTRY: return "entry";
    case PD_STAGE_HTTP: return "http";
    case PD_STAGE_SNI: return "sni";
    case PD_STAGE_HOST: return "host";
    case PD_STAGE_PATH: return "path";
    case PD_STAGE_JWT: return "jwt";
    case PD_STAGE_RATELIMIT: return "ratelimit";
    case PD_STAGE_VERDICT: return "verdict";
  }
  if (stage >= PD_STAGE_OWN && stage < PD_STAGE_MAX) return "own";
  return "unknown";
}

}  // namespace policyd::abi
