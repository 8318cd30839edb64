// Writes SentencePiece model files (tokenizer.model: a serialized sentencepiece.ModelProto) for
// the tests, since no real one can be fetched here and libsentencepiece-dev ships no proto header.
// The protobuf wire format is written by hand for the fields below; the field numbers are those
// of SentencePiece's public schema (src/sentencepiece_model.proto):
//   ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//                    NormalizerSpec normalizer_spec = 3; }
//   SentencePiece  { string piece = 1; float score = 2; Type type = 3; }
//                  Type: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
//   TrainerSpec    { ModelType model_type = 3 (UNIGRAM 1, BPE 2); int32 vocab_size = 4;
//                    bool byte_fallback = 35; int32 unk_id = 40, bos_id = 41, eos_id = 42; }
//   NormalizerSpec { string name = 1; bytes precompiled_charsmap = 2; bool add_dummy_prefix = 3;
//                    bool remove_extra_whitespaces = 4; bool escape_whitespaces = 5; }
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace switchyard::testing {

enum class SpmPieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kByte = 6 };

struct SpmPiece {
  std::string piece;
  float score = 0;
  SpmPieceType type = SpmPieceType::kNormal;
};

struct SpmModelSpec {
  std::vector<SpmPiece> pieces;
  int model_type = 2;  // BPE
  bool byte_fallback = true;
  int unk_id = 0, bos_id = 1, eos_id = 2;  // -1: none
  // Llama 2 / Mistral's NormalizerSpec: "identity" (no precompiled charsmap), a dummy "▁" in
  // front, whitespace kept as it is and written as "▁".
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  std::string precompiled_charsmap;  // written when not empty
};

namespace spm_wire {

inline void Varint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
inline void Tag(int field, int wire_type, std::string* out) {
  Varint((static_cast<uint64_t>(field) << 3) | wire_type, out);
}
// int32 fields write negative values as 10-byte varints (sign-extended to 64 bits).
inline void IntField(int field, int64_t v, std::string* out) {
  Tag(field, 0, out);
  Varint(static_cast<uint64_t>(v), out);
}
inline void BytesField(int field, const std::string& bytes, std::string* out) {
  Tag(field, 2, out);
  Varint(bytes.size(), out);
  out->append(bytes);
}
inline void FloatField(int field, float v, std::string* out) {
  Tag(field, 5, out);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
}

}  // namespace spm_wire

inline std::string SerializeSpmModel(const SpmModelSpec& spec) {
  using namespace spm_wire;
  std::string out;
  for (const SpmPiece& p : spec.pieces) {
    std::string piece;
    BytesField(1, p.piece, &piece);
    FloatField(2, p.score, &piece);
    IntField(3, static_cast<int>(p.type), &piece);
    BytesField(1, piece, &out);
  }
  std::string trainer;
  IntField(3, spec.model_type, &trainer);
  IntField(4, static_cast<int64_t>(spec.pieces.size()), &trainer);
  IntField(35, spec.byte_fallback ? 1 : 0, &trainer);
  IntField(40, spec.unk_id, &trainer);
  IntField(41, spec.bos_id, &trainer);
  IntField(42, spec.eos_id, &trainer);
  BytesField(2, trainer, &out);
  std::string normalizer;
  BytesField(1, spec.precompiled_charsmap.empty() ? "identity" : "nmt_nfkc", &normalizer);
  if (!spec.precompiled_charsmap.empty()) BytesField(2, spec.precompiled_charsmap, &normalizer);
  IntField(3, spec.add_dummy_prefix ? 1 : 0, &normalizer);
  IntField(4, spec.remove_extra_whitespaces ? 1 : 0, &normalizer);
  IntField(5, 1, &normalizer);
  BytesField(3, normalizer, &out);
  return out;
}

// The tokenizer.model a SentencePiece-style (byte_fallback BPE) tokenizer.json was converted from,
// rebuilt the way Llama 2 / Mistral files are: the same pieces at the same ids; "<0xNN>" pieces
// BYTE, model.unk_token UNKNOWN, the other special added tokens that are vocab entries (<s>, </s>)
// CONTROL; a normal piece's score is minus the rank of the first merge that makes it (SentencePiece
// merges the adjacent pair whose result scores highest, Hugging Face's conversion wrote the merges
// in that order), and a piece no merge makes (a single character) scores below every merged one.
inline std::string SpmModelFromTokenizerJson(const nlohmann::json& tokenizer_json) {
  const nlohmann::json& model = tokenizer_json.at("model");
  const nlohmann::json& vocab = model.at("vocab");
  std::vector<std::string> by_id(vocab.size());
  for (const auto& [piece, id] : vocab.items()) by_id.at(id.get<size_t>()) = piece;
  std::map<std::string, int64_t> first_rank;
  int64_t rank = 0;
  for (const nlohmann::json& merge : model.at("merges")) {
    std::string merged;
    if (merge.is_string()) {
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ');
      merged = s.substr(0, space) + s.substr(space + 1);
    } else {
      merged = merge[0].get<std::string>() + merge[1].get<std::string>();
    }
    first_rank.try_emplace(merged, rank);
    ++rank;
  }
  std::map<std::string, bool> special;
  for (const nlohmann::json& t : tokenizer_json.at("added_tokens")) {
    special[t.at("content").get<std::string>()] = t.value("special", false);
  }
  const std::string unk = model.value("unk_token", "");
  SpmModelSpec spec;
  for (size_t id = 0; id < by_id.size(); ++id) {
    const std::string& piece = by_id[id];
    SpmPiece p{piece, 0, SpmPieceType::kNormal};
    const bool is_byte = piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece.back() == '>';
    if (piece == unk) {
      p.type = SpmPieceType::kUnknown;
    } else if (special.count(piece) && special[piece]) {
      p.type = SpmPieceType::kControl;
    } else if (is_byte) {
      p.type = SpmPieceType::kByte;
    } else if (auto it = first_rank.find(piece); it != first_rank.end()) {
      p.score = -static_cast<float>(it->second);
    } else {
      p.score = -static_cast<float>(rank + static_cast<int64_t>(id));
    }
    spec.pieces.push_back(std::move(p));
  }
  spec.unk_id = -1;
  spec.bos_id = -1;
  spec.eos_id = -1;
  for (size_t id = 0; id < by_id.size(); ++id) {
    if (by_id[id] == unk) spec.unk_id = static_cast<int>(id);
    if (by_id[id] == "<s>") spec.bos_id = static_cast<int>(id);
    if (by_id[id] == "</s>") spec.eos_id = static_cast<int>(id);
  }
  return SerializeSpmModel(spec);
}

}  // namespace switchyard::testing
