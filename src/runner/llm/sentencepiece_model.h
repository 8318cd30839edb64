// The contents of a SentencePiece model file (`tokenizer.model`: a serialized
// sentencepiece.ModelProto, as Llama 2 / Mistral / TinyLlama checkpoints ship it), read from the
// protobuf wire format by hand: only the fields that decide how text is encoded. Tokenizer
// (tokenizer.h) builds its tables from it; the encoding itself is Tokenizer's BPE, run the way
// SentencePiece's BPE runs (docs/llm.md "From a SentencePiece tokenizer.model").
//
// Why not Debian's libsentencepiece at run time: Debian 12's libsentencepiece0 carries its own
// protobuf-lite 3.14.0 and exports those symbols, so a process that also loads Debian's
// libprotobuf 3.21 (every Switchyard daemon, through gRPC) aborts at start or crashes. The tests
// use the library as the reference instead (tests/runner/sentencepiece_reference.h).
//
// Field numbers from SentencePiece's public schema (src/sentencepiece_model.proto):
//   ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//                    NormalizerSpec normalizer_spec = 3; NormalizerSpec denormalizer_spec = 5; }
//   SentencePiece  { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }
//   TrainerSpec    { ModelType model_type = 3 [default UNIGRAM]; bool treat_whitespace_as_suffix
//                    = 24; bool byte_fallback = 35; string unk_piece = 45, bos_piece = 46
//                    [default "<s>"], eos_piece = 47 [default "</s>"]; }
//   NormalizerSpec { string name = 1; bytes precompiled_charsmap = 2; bool add_dummy_prefix = 3,
//                    remove_extra_whitespaces = 4, escape_whitespaces = 5 [defaults true];
//                    string normalization_rule_tsv = 6; }
// The file is hostile: every length is bounds-checked, groups are refused, unknown fields are
// skipped, and the caller caps the file's size and its pieces' count and lengths.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::llm {

struct SentencePieceModelFile {
  // ModelProto.SentencePiece.Type.
  enum PieceType : int {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
  };
  struct Piece {
    std::string piece;
    float score = 0;
    int type = kNormal;
  };
  // TrainerSpec.ModelType.
  enum ModelType : int { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  std::vector<Piece> pieces;
  // TrainerSpec (proto2 defaults where the file says nothing).
  int model_type = kUnigram;
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  std::string bos_piece = "<s>";
  std::string eos_piece = "</s>";
  // NormalizerSpec.
  std::string normalizer_name;
  size_t precompiled_charsmap_bytes = 0;
  bool normalization_rule_tsv = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  // denormalizer_spec: whether the file has one with a charsmap or rules (decoding rules).
  bool denormalizer_rules = false;
};

// Parses `bytes` (INVALID_ARGUMENT naming the field on malformed input); more than `max_pieces`
// pieces or a piece longer than `max_piece_bytes` is INVALID_ARGUMENT too.
absl::StatusOr<SentencePieceModelFile> ParseSentencePieceModel(absl::string_view bytes,
                                                               size_t max_pieces,
                                                               size_t max_piece_bytes);

}  // namespace switchyard::llm
