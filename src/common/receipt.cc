#include "common/receipt.h"

#include <openssl/evp.h>

#include <bit>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace switchyard {
namespace {

void AppendU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out->push_back(static_cast<char>((v >> shift) & 0xff));
}

void AppendU64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out->push_back(static_cast<char>((v >> shift) & 0xff));
}

void AppendBytes(std::string* out, absl::string_view field) {
  AppendU32(out, static_cast<uint32_t>(field.size()));
  out->append(field.data(), field.size());
}

void AppendInt(std::string* out, uint64_t v) {
  AppendU32(out, 8);
  AppendU64(out, v);
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string Sha256(absl::string_view data) {
  std::string out(kReceiptDigestBytes, '\0');
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
             EVP_sha256(), nullptr);
  return out;
}

}  // namespace

std::string ReceiptSigningBytes(const v1::JobReceipt& r) {
  std::string out = "switchyard job receipt v1\n";
  for (const std::string* field : {&r.job_id(), &r.gateway_id(), &r.node_id(), &r.node_public_key(),
                                   &r.pipeline(), &r.model_id()}) {
    AppendBytes(&out, *field);
  }
  AppendInt(&out, static_cast<uint64_t>(r.units()));
  uint64_t bits = std::bit_cast<uint64_t>(r.price_per_unit());
  if (std::isnan(r.price_per_unit())) bits = 0x7ff8000000000000ULL;
  AppendInt(&out, bits);
  AppendBytes(&out, r.request_sha256());
  AppendBytes(&out, r.result_sha256());
  AppendInt(&out, static_cast<uint64_t>(r.start_unix_ms()));
  AppendInt(&out, static_cast<uint64_t>(r.end_unix_ms()));
  return out;
}

absl::Status SignReceipt(const NodeKey& key, v1::JobReceipt* receipt) {
  receipt->set_version(kReceiptVersion);
  receipt->set_node_public_key(key.public_key());
  absl::StatusOr<std::string> sig = key.Sign(ReceiptSigningBytes(*receipt));
  if (!sig.ok()) return sig.status();
  receipt->set_signature(*std::move(sig));
  return absl::OkStatus();
}

absl::Status VerifyReceiptSignature(const v1::JobReceipt& receipt) {
  if (receipt.version() != kReceiptVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("receipt version ", receipt.version(), " is not ", kReceiptVersion));
  }
  if (receipt.request_sha256().size() != kReceiptDigestBytes ||
      receipt.result_sha256().size() != kReceiptDigestBytes) {
    return absl::InvalidArgumentError("a receipt's digests are 32 bytes each");
  }
  return VerifyNodeSignature(receipt.node_public_key(), ReceiptSigningBytes(receipt),
                             receipt.signature());
}

std::string DeterministicBytes(const google::protobuf::Message& message) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return bytes;
}

std::string RequestDigest(const google::protobuf::Message& request) {
  return Sha256(DeterministicBytes(request));
}

struct ResultDigest::Ctx {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> md{EVP_MD_CTX_new()};
};

ResultDigest::ResultDigest() : ctx_(new Ctx) { Reset(); }
ResultDigest::~ResultDigest() { delete ctx_; }

void ResultDigest::Reset() { EVP_DigestInit_ex(ctx_->md.get(), EVP_sha256(), nullptr); }

void ResultDigest::Add(const google::protobuf::Message& message) {
  const std::string bytes = DeterministicBytes(message);
  std::string length;
  AppendU64(&length, bytes.size());
  EVP_DigestUpdate(ctx_->md.get(), length.data(), length.size());
  EVP_DigestUpdate(ctx_->md.get(), bytes.data(), bytes.size());
}

std::string ResultDigest::Finish() {
  std::string out(kReceiptDigestBytes, '\0');
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->md.get(), reinterpret_cast<unsigned char*>(out.data()), &len);
  Reset();
  return out;
}

nlohmann::json ReceiptToJson(const v1::JobReceipt& r) {
  nlohmann::json j;
  j["version"] = r.version();
  j["job_id"] = r.job_id();
  j["gateway_id"] = r.gateway_id();
  j["node_id"] = r.node_id();
  j["node_public_key"] = absl::BytesToHexString(r.node_public_key());
  j["pipeline"] = r.pipeline();
  j["model_id"] = r.model_id();
  j["units"] = r.units();
  if (std::isnan(r.price_per_unit())) {
    j["price_per_unit"] = nullptr;
  } else {
    j["price_per_unit"] = r.price_per_unit();
  }
  j["request_sha256"] = absl::BytesToHexString(r.request_sha256());
  j["result_sha256"] = absl::BytesToHexString(r.result_sha256());
  j["start_unix_ms"] = r.start_unix_ms();
  j["end_unix_ms"] = r.end_unix_ms();
  j["signature"] = absl::BytesToHexString(r.signature());
  return j;
}

absl::StatusOr<v1::JobReceipt> ReceiptFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("a receipt is a JSON object");
  auto missing = [](const char* name, const char* what) {
    return absl::InvalidArgumentError(absl::StrCat("receipt field '", name, "' must be ", what));
  };
  auto string_field = [&](const char* name, std::string* out) -> absl::Status {
    auto it = j.find(name);
    if (it == j.end() || !it->is_string()) return missing(name, "a string");
    *out = it->get<std::string>();
    return absl::OkStatus();
  };
  auto hex_field = [&](const char* name, size_t max_bytes, std::string* out) -> absl::Status {
    std::string hex;
    if (absl::Status st = string_field(name, &hex); !st.ok()) return st;
    if (hex.size() % 2 != 0 || hex.size() > 2 * max_bytes) return missing(name, "hex bytes");
    for (char c : hex) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return missing(name, "hex bytes");
    }
    *out = absl::HexStringToBytes(hex);
    return absl::OkStatus();
  };
  auto int_field = [&](const char* name, int64_t* out) -> absl::Status {
    auto it = j.find(name);
    if (it == j.end() || !it->is_number_integer()) return missing(name, "an integer");
    *out = it->get<int64_t>();
    return absl::OkStatus();
  };
  v1::JobReceipt r;
  int64_t version = 0, units = 0, start = 0, end = 0;
  if (auto st = int_field("version", &version); !st.ok()) return st;
  if (version < 0 || version > std::numeric_limits<uint32_t>::max()) {
    return missing("version", "a small integer");
  }
  r.set_version(static_cast<uint32_t>(version));
  for (auto [name, setter] :
       std::initializer_list<std::pair<const char*, std::string* (v1::JobReceipt::*)()>>{
           {"job_id", &v1::JobReceipt::mutable_job_id},
           {"gateway_id", &v1::JobReceipt::mutable_gateway_id},
           {"node_id", &v1::JobReceipt::mutable_node_id},
           {"pipeline", &v1::JobReceipt::mutable_pipeline},
           {"model_id", &v1::JobReceipt::mutable_model_id}}) {
    if (auto st = string_field(name, (r.*setter)()); !st.ok()) return st;
  }
  if (auto st = hex_field("node_public_key", kNodePublicKeyBytes, r.mutable_node_public_key());
      !st.ok()) {
    return st;
  }
  if (auto st = hex_field("request_sha256", kReceiptDigestBytes, r.mutable_request_sha256());
      !st.ok()) {
    return st;
  }
  if (auto st = hex_field("result_sha256", kReceiptDigestBytes, r.mutable_result_sha256());
      !st.ok()) {
    return st;
  }
  if (auto st = hex_field("signature", kNodeSignatureBytes, r.mutable_signature()); !st.ok()) {
    return st;
  }
  if (auto st = int_field("units", &units); !st.ok()) return st;
  r.set_units(units);
  auto price = j.find("price_per_unit");
  if (price == j.end() || !(price->is_number() || price->is_null())) {
    return missing("price_per_unit", "a number or null");
  }
  r.set_price_per_unit(price->is_null() ? std::numeric_limits<double>::quiet_NaN()
                                        : price->get<double>());
  if (auto st = int_field("start_unix_ms", &start); !st.ok()) return st;
  if (auto st = int_field("end_unix_ms", &end); !st.ok()) return st;
  r.set_start_unix_ms(start);
  r.set_end_unix_ms(end);
  return r;
}

}  // namespace switchyard
