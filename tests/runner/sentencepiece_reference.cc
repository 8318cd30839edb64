#include "runner/sentencepiece_reference.h"

#include <sentencepiece_processor.h>

#include <utility>

namespace switchyard::llm::testing {

struct SentencePieceReference::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceReference::SentencePieceReference(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
SentencePieceReference::~SentencePieceReference() = default;

std::unique_ptr<SentencePieceReference> SentencePieceReference::Load(std::string_view serialized,
                                                                     std::string* error) {
  auto impl = std::make_unique<Impl>();
  const sentencepiece::util::Status status = impl->processor.LoadFromSerializedProto(serialized);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  if (impl->processor.GetPieceSize() <= 0) {
    *error = "no pieces";
    return nullptr;
  }
  return std::unique_ptr<SentencePieceReference>(new SentencePieceReference(std::move(impl)));
}

int SentencePieceReference::piece_count() const { return impl_->processor.GetPieceSize(); }

const std::string& SentencePieceReference::piece(int id) const {
  return impl_->processor.IdToPiece(id);
}

SentencePieceReference::PieceType SentencePieceReference::type(int id) const {
  const auto& p = impl_->processor;
  if (p.IsUnknown(id)) return PieceType::kUnknown;
  if (p.IsControl(id)) return PieceType::kControl;
  if (p.IsByte(id)) return PieceType::kByte;
  if (p.IsUnused(id)) return PieceType::kUnused;
  return PieceType::kNormal;
}

int SentencePieceReference::bos_id() const { return impl_->processor.bos_id(); }
int SentencePieceReference::eos_id() const { return impl_->processor.eos_id(); }

bool SentencePieceReference::Encode(std::string_view text, std::vector<int32_t>* ids,
                                    std::string* error) const {
  std::vector<int> out;
  const sentencepiece::util::Status status = impl_->processor.Encode(text, &out);
  if (!status.ok()) {
    *error = status.ToString();
    return false;
  }
  ids->insert(ids->end(), out.begin(), out.end());
  return true;
}

}  // namespace switchyard::llm::testing
