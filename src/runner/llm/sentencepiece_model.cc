#include "runner/llm/sentencepiece_model.h"

#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::llm {
namespace {

absl::Status Malformed(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.model: not a SentencePiece model: ", where, ": ", what));
}

// A bounds-checked reader of protobuf wire format.
class WireReader {
 public:
  explicit WireReader(absl::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }

  bool Varint(uint64_t* out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return false;
      const auto byte = static_cast<unsigned char>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) {
        *out = value;
        return true;
      }
    }
    return false;  // more than 10 bytes
  }
  bool Fixed32(uint32_t* out) {
    if (data_.size() - pos_ < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v |= static_cast<uint32_t>(static_cast<unsigned char>(data_[pos_ + i])) << (8 * i);
    pos_ += 4;
    *out = v;
    return true;
  }
  bool Bytes(absl::string_view* out) {
    uint64_t size = 0;
    if (!Varint(&size) || size > data_.size() - pos_) return false;
    *out = data_.substr(pos_, size);
    pos_ += size;
    return true;
  }
  // Skips a field of `wire_type`; groups (3, 4) and unknown types are refused.
  bool Skip(int wire_type) {
    uint64_t ignored;
    absl::string_view bytes;
    switch (wire_type) {
      case 0:
        return Varint(&ignored);
      case 1:
        if (data_.size() - pos_ < 8) return false;
        pos_ += 8;
        return true;
      case 2:
        return Bytes(&bytes);
      case 5:
        if (data_.size() - pos_ < 4) return false;
        pos_ += 4;
        return true;
      default:
        return false;
    }
  }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
};

// Calls on_field(field, wire_type, reader) for each field of `message`; it returns false when the
// field is malformed, or reads/skips it.
template <typename OnField>
absl::Status ForEachField(absl::string_view message, absl::string_view where, OnField on_field) {
  WireReader reader(message);
  while (!reader.done()) {
    uint64_t tag = 0;
    if (!reader.Varint(&tag)) return Malformed(where, "truncated field tag");
    const uint64_t field = tag >> 3;
    const int wire_type = static_cast<int>(tag & 7);
    if (field == 0 || field > (uint64_t{1} << 29)) return Malformed(where, "bad field number");
    if (!on_field(static_cast<int>(field), wire_type, reader)) {
      return Malformed(where, absl::StrCat("field ", field, " is malformed or truncated"));
    }
  }
  return absl::OkStatus();
}

bool ReadBool(int wire_type, WireReader& r, bool* out) {
  uint64_t v = 0;
  if (wire_type != 0 || !r.Varint(&v)) return false;
  *out = v != 0;
  return true;
}

bool ReadInt(int wire_type, WireReader& r, int* out) {
  uint64_t v = 0;
  if (wire_type != 0 || !r.Varint(&v)) return false;
  *out = static_cast<int>(static_cast<int64_t>(v));  // int32 fields: sign-extended
  return true;
}

bool ReadString(int wire_type, WireReader& r, std::string* out, size_t max_bytes) {
  absl::string_view bytes;
  if (wire_type != 2 || !r.Bytes(&bytes) || bytes.size() > max_bytes) return false;
  out->assign(bytes.data(), bytes.size());
  return true;
}

}  // namespace

absl::StatusOr<SentencePieceModelFile> ParseSentencePieceModel(absl::string_view bytes,
                                                               size_t max_pieces,
                                                               size_t max_piece_bytes) {
  SentencePieceModelFile out;
  absl::Status piece_error;
  auto top = ForEachField(bytes, "ModelProto", [&](int field, int wire_type, WireReader& r) {
    absl::string_view message;
    switch (field) {
      case 1: {  // pieces
        if (wire_type != 2 || !r.Bytes(&message)) return false;
        if (out.pieces.size() >= max_pieces) {
          piece_error = absl::InvalidArgumentError(
              absl::StrCat("tokenizer.model: more than ", max_pieces, " pieces"));
          return true;
        }
        SentencePieceModelFile::Piece piece;
        auto s = ForEachField(message, absl::StrCat("pieces[", out.pieces.size(), "]"),
                              [&](int f, int w, WireReader& pr) {
                                if (f == 1) return ReadString(w, pr, &piece.piece, max_piece_bytes);
                                if (f == 2) {
                                  uint32_t bits = 0;
                                  if (w != 5 || !pr.Fixed32(&bits)) return false;
                                  std::memcpy(&piece.score, &bits, 4);
                                  return true;
                                }
                                if (f == 3) return ReadInt(w, pr, &piece.type);
                                return pr.Skip(w);
                              });
        if (!s.ok()) {
          if (piece_error.ok()) piece_error = s;
          return true;
        }
        out.pieces.push_back(std::move(piece));
        return true;
      }
      case 2: {  // trainer_spec
        if (wire_type != 2 || !r.Bytes(&message)) return false;
        auto s = ForEachField(message, "trainer_spec", [&](int f, int w, WireReader& tr) {
          switch (f) {
            case 3:
              return ReadInt(w, tr, &out.model_type);
            case 24:
              return ReadBool(w, tr, &out.treat_whitespace_as_suffix);
            case 35:
              return ReadBool(w, tr, &out.byte_fallback);
            case 46:
              return ReadString(w, tr, &out.bos_piece, max_piece_bytes);
            case 47:
              return ReadString(w, tr, &out.eos_piece, max_piece_bytes);
            default:
              return tr.Skip(w);
          }
        });
        if (!s.ok() && piece_error.ok()) piece_error = s;
        return true;
      }
      case 3: {  // normalizer_spec
        if (wire_type != 2 || !r.Bytes(&message)) return false;
        auto s = ForEachField(message, "normalizer_spec", [&](int f, int w, WireReader& nr) {
          absl::string_view value;
          switch (f) {
            case 1:
              return ReadString(w, nr, &out.normalizer_name, 256);
            case 2:
              if (w != 2 || !nr.Bytes(&value)) return false;
              out.precompiled_charsmap_bytes = value.size();
              return true;
            case 3:
              return ReadBool(w, nr, &out.add_dummy_prefix);
            case 4:
              return ReadBool(w, nr, &out.remove_extra_whitespaces);
            case 5:
              return ReadBool(w, nr, &out.escape_whitespaces);
            case 6:
              if (w != 2 || !nr.Bytes(&value)) return false;
              out.normalization_rule_tsv = !value.empty();
              return true;
            default:
              return nr.Skip(w);
          }
        });
        if (!s.ok() && piece_error.ok()) piece_error = s;
        return true;
      }
      case 5: {  // denormalizer_spec
        if (wire_type != 2 || !r.Bytes(&message)) return false;
        auto s = ForEachField(message, "denormalizer_spec", [&](int f, int w, WireReader& dr) {
          absl::string_view value;
          if (f == 2 || f == 6) {
            if (w != 2 || !dr.Bytes(&value)) return false;
            if (!value.empty()) out.denormalizer_rules = true;
            return true;
          }
          return dr.Skip(w);
        });
        if (!s.ok() && piece_error.ok()) piece_error = s;
        return true;
      }
      default:
        return r.Skip(wire_type);
    }
  });
  if (!top.ok()) return top;
  if (!piece_error.ok()) return piece_error;
  return out;
}

}  // namespace switchyard::llm
