// Signed job receipts (issue 23; docs/security.md, "Receipts"). For every completed job the
// orchestrator signs, with its identity key (common/node_identity.h), what it did: the job and
// gateway ids, pipeline, model, units, price per unit, SHA-256 of the request it received and of
// the result it sent, and when. The gateway checks the receipt against what it saw and keeps it
// with the job's ledger row; `switchyard verify-receipts` checks exported receipts offline.
//
// The signature covers ReceiptSigningBytes: a domain tag and the fields in a fixed order, each
// with its length, independent of protobuf's wire encoding. The digests (RequestDigest,
// ResultDigest) hash protobuf's deterministic serialization, which both sides produce alike
// as long as they share the message's schema (a field one side does not know is kept as an
// unknown field and written after the known ones, so a newer schema can give other bytes: then
// the gateway finds a result mismatch, which names the field).
#pragma once

#include <cstdint>
#include <string>

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/node_identity.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard {

inline constexpr uint32_t kReceiptVersion = 1;
inline constexpr size_t kReceiptDigestBytes = 32;  // SHA-256
// Sent by the gateway with each attempt: the node signs them into its receipt. Longer values
// than kMaxReceiptIdBytes are not signed (the receipt then carries ""; the gateway's check fails).
inline constexpr char kGatewayIdMetadata[] = "x-switchyard-gateway-id";
inline constexpr char kJobIdMetadata[] = "x-switchyard-job-id";
inline constexpr size_t kMaxReceiptIdBytes = 256;

// The bytes a receipt's signature covers (every field but `signature`):
//   "switchyard job receipt v1\n"
//   then, in this order: job_id, gateway_id, node_id, node_public_key, pipeline, model_id,
//   units, price_per_unit, request_sha256, result_sha256, start_unix_ms, end_unix_ms,
//   each as a 4-byte big-endian length and its bytes; integers as their 8 bytes, big-endian
//   two's complement; the price as its IEEE-754 binary64 bits, big-endian (every NaN as
//   0x7ff8000000000000, so that a NaN survives a JSON export, which writes it as null).
// The version is in the tag: another layout is another tag.
std::string ReceiptSigningBytes(const v1::JobReceipt& receipt);

// Sets the receipt's version, node_public_key and signature. INTERNAL if signing fails.
absl::Status SignReceipt(const NodeKey& key, v1::JobReceipt* receipt);

// OK when the receipt is a version-1 receipt with 32-byte digests, signed by its own
// node_public_key. INVALID_ARGUMENT for a malformed one, UNAUTHENTICATED for a bad signature.
// Whether that key is the node's is the caller's question.
absl::Status VerifyReceiptSignature(const v1::JobReceipt& receipt);

// Protobuf's deterministic serialization of `message`.
std::string DeterministicBytes(const google::protobuf::Message& message);

// SHA-256 of DeterministicBytes(request): the request as the node received it (the gateway
// hashes the one it sent).
std::string RequestDigest(const google::protobuf::Message& request);

// SHA-256 over a job's response messages in order, each as an 8-byte big-endian length and its
// DeterministicBytes, with its `job` (JobInfo) field cleared: one message for a unary job
// (images, audio, transcodes, live video segments), every message of the stream for an LLM
// stream. Add the messages without their JobInfo (the node hashes before it fills it in; the
// gateway through AddWithoutJob).
class ResultDigest {
 public:
  ResultDigest();
  ~ResultDigest();
  ResultDigest(const ResultDigest&) = delete;
  ResultDigest& operator=(const ResultDigest&) = delete;

  // Adds a message that has no `job` set (checked by the caller).
  void Add(const google::protobuf::Message& message);
  // Adds a copy of `message` with its `job` field cleared.
  template <typename Response>
  void AddWithoutJob(const Response& message) {
    if (!message.has_job()) return Add(message);
    Response copy = message;
    copy.clear_job();
    Add(copy);
  }
  // The 32-byte digest; the object starts over afterwards.
  std::string Finish();

 private:
  void Reset();
  struct Ctx;
  Ctx* ctx_;
};

// The unix milliseconds of `t` (for start_unix_ms and end_unix_ms).
inline int64_t ReceiptMillis(absl::Time t) { return absl::ToUnixMillis(t); }

// A receipt as JSON (the export format, docs/metering.md): bytes as lowercase hex, the price as
// a number (null for NaN), the other fields as they are.
nlohmann::json ReceiptToJson(const v1::JobReceipt& receipt);
// The inverse. INVALID_ARGUMENT naming the field for a missing or mistyped field, or bytes that
// are not hex of the right length.
absl::StatusOr<v1::JobReceipt> ReceiptFromJson(const nlohmann::json& json);

}  // namespace switchyard
