// Debian's libsentencepiece (libsentencepiece-dev) as the reference for the tokenizer.model path
// of llm::Tokenizer: the test loads the same file with the library and checks that Switchyard's
// ids are the library's. Only tests use it: Debian 12's libsentencepiece0 carries its own copy of
// protobuf-lite 3.14.0 and exports its symbols, so a process that also loads Debian's libprotobuf
// 3.21 (every daemon: gRPC) aborts at start ("compiled against version 3.14.0 ... installed version
// (3.21.12)") or crashes, whichever library comes first. A test binary without protobuf can load
// it.
//
// This header and its .cc include no Abseil: sentencepiece_processor.h declares
// `namespace absl { using std::string_view; }`, which clashes with Debian's Abseil, whose
// absl::string_view is its own class (ABSL_OPTION_USE_STD_STRING_VIEW 0).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::llm::testing {

class SentencePieceReference {
 public:
  // The kinds of piece the file declares (ModelProto.SentencePiece.Type); user-defined pieces
  // count as kNormal (the library matches them in the text itself).
  enum class PieceType { kNormal, kUnknown, kControl, kByte, kUnused };

  // Parses and initializes a serialized ModelProto. On failure returns null and sets *error to the
  // library's message.
  static std::unique_ptr<SentencePieceReference> Load(std::string_view serialized,
                                                      std::string* error);

  ~SentencePieceReference();
  SentencePieceReference(const SentencePieceReference&) = delete;
  SentencePieceReference& operator=(const SentencePieceReference&) = delete;

  int piece_count() const;
  // id in [0, piece_count()).
  const std::string& piece(int id) const;
  PieceType type(int id) const;
  // The file's reserved ids (TrainerSpec's bos_id / eos_id), -1 when it has none.
  int bos_id() const;
  int eos_id() const;

  // The ids SentencePiece gives `text` (no BOS/EOS: the library adds them only when asked).
  // Normalization (the file's NormalizerSpec: dummy prefix, whitespace), the model (BPE merged
  // by piece score, Unigram, ...) and byte fallback are the library's. Thread-safe (const).
  // False with *error set when the library refuses.
  bool Encode(std::string_view text, std::vector<int32_t>* ids, std::string* error) const;

 private:
  struct Impl;
  explicit SentencePieceReference(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchyard::llm::testing
